//! What a `feedback_analysis` job does of its own: it reads one answer with the
//! question it answers, asks the model to assess it, and commits the feedback message
//! with the operation's result.
//!
//! It runs beside the session's one-at-a-time order of questions, and whatever the
//! session's status: a candidate who asks for feedback on their last answer and then
//! ends the interview still gets it (the api refuses to queue one on a session that is
//! no longer active, but the worker honours what was accepted).

use super::{Cost, Ending, JobState, Work};
use crate::llm::{Generated, Llm, LlmError, Writer};
use crate::output::Feedback;
use crate::prompt::{FEEDBACK_PROMPT_VERSION, FeedbackContext};
use anyhow::Context;
use serde_json::json;
use shared::db::attempt::Started;
use shared::db::feedback::{self, Completion, FeedbackInputs, NewFeedback};
use shared::db::operations;
use shared::db::wake::Wake;
use shared::domain::SessionId;
use shared::jobs::FeedbackAnalysisJob;
use sqlx::PgConnection;

impl Work for FeedbackAnalysisJob {
    type Inputs = FeedbackInputs;
    type Context = FeedbackContext;
    type Output = Feedback;

    fn session_id(&self) -> SessionId {
        self.session_id
    }

    async fn start(
        &self,
        conn: &mut PgConnection,
        _state: &JobState,
    ) -> Result<Option<Started<FeedbackInputs>>, sqlx::Error> {
        feedback::start(conn, self.operation_id, self.session_id, self.answer_id).await
    }

    fn context(&self, inputs: Option<FeedbackInputs>) -> Result<FeedbackContext, String> {
        // An answer and its question go only with their session.
        let inputs = inputs.ok_or_else(|| operations::FEEDBACK_SESSION_GONE.to_owned())?;
        Ok(FeedbackContext {
            job_posting: inputs.job_posting,
            resume: inputs.resume,
            question: inputs.question,
            question_type: inputs.question_type,
            answer: inputs.answer,
        })
    }

    async fn ask(llm: &Llm, context: &FeedbackContext) -> Result<Generated<Feedback>, LlmError> {
        llm.feedback(context).await
    }

    /// The ONE transaction: the message and the operation's result together, or
    /// nothing.
    async fn commit(
        &self,
        state: &JobState,
        generated: Generated<Feedback>,
        cost: Cost,
    ) -> anyhow::Result<Ending> {
        let review = &generated.output;
        let mut metadata = cost.metadata(self.operation_id, &generated, FEEDBACK_PROMPT_VERSION);
        metadata["answer_id"] = json!(self.answer_id);
        metadata["score"] = json!(review.score);
        metadata["strengths"] = json!(review.strengths);
        metadata["improvements"] = json!(review.improvements);
        let result = json!({
            "answer_id": self.answer_id,
            "score": review.score,
            "strengths": review.strengths,
            "improvements": review.improvements,
            "summary": review.summary,
        });
        let new = NewFeedback {
            session_id: self.session_id,
            operation_id: self.operation_id,
            summary: &review.summary,
            metadata: &metadata,
            result: &result,
        };
        let mut conn = (state.pool.acquire().await).context("acquiring the commit's connection")?;
        let mut tx = super::ending_transaction(&mut conn).await?;
        let finished = Wake::operation_finished(self.operation_id);
        let completion = feedback::complete(&mut tx, &new)
            .await
            .context("storing the feedback and the operation's result")?;
        match completion {
            Completion::Completed { message_id } => {
                tx.commit().await.context("committing the feedback")?;
                finished.send(&mut conn).await;
                tracing::info!(message_id = %message_id, score = review.score, "feedback committed");
                Ok(Ending::Done)
            }
            Completion::SessionGone => {
                let ending = super::fail(
                    &mut tx,
                    self.operation_id,
                    operations::FEEDBACK_SESSION_GONE,
                )
                .await?;
                tx.commit()
                    .await
                    .context("committing the operation's failure")?;
                finished.send(&mut conn).await;
                Ok(ending)
            }
            Completion::AlreadyStored => {
                tracing::info!("another delivery already stored this operation's feedback");
                Ok(Ending::Done)
            }
            Completion::OperationFinished => {
                tracing::info!("operation finished elsewhere; discarding this feedback");
                Ok(Ending::Done)
            }
        }
    }
}
