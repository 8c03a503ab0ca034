//! The domain vocabulary: typed ids and the closed sets of states and kinds.
//!
//! Every enum is spelled in snake_case identically in JSON, in the database (where a
//! CHECK constraint holds the same list) and in `docs/API.md`.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(Serialize, Deserialize, sqlx::Type, ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id, so rows sort by creation in indexes.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// A registered user; the `sub` claim of their tokens.
    UserId
);
id_type!(
    /// A job posting a user practises for.
    JobPostingId
);
id_type!(
    /// An interview session.
    SessionId
);
id_type!(
    /// A question, an answer or a feedback in a session.
    MessageId
);
id_type!(
    /// A long-running operation, polled by the client.
    OperationId
);
id_type!(
    /// A user's resume.
    ResumeId
);

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
        #[serde(rename_all = "snake_case")]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling shared by JSON, SQL and the contract.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }
    };
}

/// A string that names no variant of the enum it was parsed as.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{value:?} is not a valid {kind}")]
pub struct UnknownVariant {
    kind: &'static str,
    value: String,
}

text_enum!(
    /// Where a session stands: `active` ⇄ `paused`, either → `completed` (final).
    SessionStatus {
        Active => "active",
        Paused => "paused",
        Completed => "completed",
    }
);

impl SessionStatus {
    /// Whether a session may move from `self` to `to`. Staying put is allowed (a
    /// repeated PATCH is a no-op); nothing leaves `completed`.
    pub fn can_become(self, to: SessionStatus) -> bool {
        self == to || self != SessionStatus::Completed
    }
}

text_enum!(
    /// The life of an operation: `pending` → `processing` → `completed` | `failed`.
    OperationStatus {
        Pending => "pending",
        Processing => "processing",
        Completed => "completed",
        Failed => "failed",
    }
);

impl OperationStatus {
    /// Whether the operation has reached its end and will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, OperationStatus::Completed | OperationStatus::Failed)
    }
}

text_enum!(
    /// What an operation does; the name of its job queue too.
    OperationType {
        QuestionGeneration => "question_generation",
        FeedbackAnalysis => "feedback_analysis",
    }
);

impl OperationType {
    /// How every failure sentence of this type begins ("The question could not be
    /// generated: …"), so that a person knows what failed.
    pub fn failure_prefix(self) -> &'static str {
        match self {
            OperationType::QuestionGeneration => "The question could not be generated",
            OperationType::FeedbackAnalysis => "The feedback could not be generated",
        }
    }

    /// The failure sentence of this type for `reason` (lower case, with its full stop).
    pub fn failure(self, reason: &str) -> String {
        format!("{}: {reason}", self.failure_prefix())
    }
}

text_enum!(
    /// Who wrote a session message.
    MessageType {
        Question => "question",
        Answer => "answer",
        Feedback => "feedback",
    }
);

text_enum!(
    /// The kind of an interview question.
    QuestionType {
        Technical => "technical",
        Behavioral => "behavioral",
        Situational => "situational",
    }
);

impl QuestionType {
    /// The type requested for the question that follows `questions_so_far` questions:
    /// technical, behavioral, situational, technical, …
    pub fn for_position(questions_so_far: i32) -> Self {
        let index = usize::try_from(questions_so_far.rem_euclid(3)).unwrap_or(0);
        Self::ALL[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_types_rotate_technical_behavioral_situational() {
        let types: Vec<_> = (0..4).map(QuestionType::for_position).collect();
        use QuestionType::*;
        assert_eq!(types, [Technical, Behavioral, Situational, Technical]);
    }

    #[test]
    fn nothing_leaves_a_completed_session() {
        use SessionStatus::*;
        assert!(Active.can_become(Paused) && Paused.can_become(Active));
        assert!(Active.can_become(Completed) && Paused.can_become(Completed));
        assert!(!Completed.can_become(Active) && !Completed.can_become(Paused));
    }

    #[test]
    fn enums_spell_the_same_in_json_and_text() {
        for status in OperationStatus::ALL {
            let json = serde_json::to_string(status).expect("serializes");
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(
                status.as_str().parse::<OperationStatus>().ok(),
                Some(*status)
            );
        }
    }
}
