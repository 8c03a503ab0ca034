//! The api's integration tests, one binary (one link step).

mod helpers;

mod auth;
mod errors;
mod feedback;
mod generate;
mod hostile;
mod hostile_users;
mod interview;
mod listener;
mod openapi;
mod operations;
mod ownership;
mod resources;
mod screens;
mod session_operations;
