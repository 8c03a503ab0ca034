//! What a `question_generation` job does of its own: it reads the session's earlier
//! questions, asks for the next one of the rotating type, and commits the question with
//! the session's counter.

use super::{Cost, Ending, JobState, SESSION_NOT_ACTIVE, Work, fail, sentence};
use crate::llm::{Generated, Llm, LlmError, Writer};
use crate::output::Question;
use crate::prompt::{PROMPT_VERSION, QuestionContext};
use anyhow::Context;
use metrics::histogram;
use shared::db::attempt::{self, Completion, QuestionInputs, Started};
use shared::db::wake::Wake;
use shared::db::{operations, sessions};
use shared::domain::{QuestionType, SessionId, SessionStatus};
use shared::jobs::QuestionGenerationJob;
use sqlx::PgConnection;

impl Work for QuestionGenerationJob {
    type Inputs = QuestionInputs;
    type Context = QuestionContext;
    type Output = Question;

    fn session_id(&self) -> SessionId {
        self.session_id
    }

    async fn start(
        &self,
        conn: &mut PgConnection,
        state: &JobState,
    ) -> Result<Option<Started<QuestionInputs>>, sqlx::Error> {
        attempt::start(
            conn,
            self.operation_id,
            self.session_id,
            state.max_earlier_questions,
        )
        .await
    }

    fn context(&self, inputs: Option<QuestionInputs>) -> Result<QuestionContext, String> {
        let Some(inputs) = inputs else {
            return Err(operations::SESSION_GONE.to_owned());
        };
        if inputs.status != SessionStatus::Active {
            return Err(sentence::<Self>(SESSION_NOT_ACTIVE));
        }
        Ok(QuestionContext {
            job_posting: inputs.job_posting,
            resume: inputs.resume,
            earlier_questions: inputs.earlier_questions,
            questions_asked: inputs.current_question_number,
            requested_type: QuestionType::for_position(inputs.current_question_number),
        })
    }

    async fn ask(llm: &Llm, context: &QuestionContext) -> Result<Generated<Question>, LlmError> {
        llm.question(context).await
    }

    /// The ONE transaction: message, counter and result together, or nothing.
    async fn commit(
        &self,
        state: &JobState,
        generated: Generated<Question>,
        cost: Cost,
    ) -> anyhow::Result<Ending> {
        let metadata = cost.metadata(self.operation_id, &generated, PROMPT_VERSION);
        // Every call the question took is billed, but only the one that wrote it reports
        // usage here: the figure is that call's tokens (`llm_tokens_total` counts them all).
        let tokens = generated.usage.map(|usage| usage.total_tokens);
        let question = attempt::NewQuestion {
            session_id: self.session_id,
            operation_id: self.operation_id,
            content: &generated.output.text,
            question_type: generated.output.question_type,
            metadata: &metadata,
        };
        let mut conn = (state.pool.acquire().await).context("acquiring the commit's connection")?;
        let mut tx = super::ending_transaction(&mut conn).await?;
        let finished = Wake::operation_finished(self.operation_id);
        // An ending that wrote what must not stand (`AlreadyStored`, `OperationFinished`)
        // returns without committing: the dropped transaction rolls it back.
        let completion = attempt::complete(&mut tx, &question)
            .await
            .context("storing the question, its number and the operation's result")?;
        match completion {
            Completion::Completed {
                question_number,
                message_id,
            } => {
                tx.commit().await.context("committing the question")?;
                finished.send(&mut conn).await;
                if let Some(tokens) = tokens {
                    histogram!("llm_tokens_per_question").record(f64::from(tokens));
                }
                tracing::info!(question_number, message_id = %message_id, "question committed");
                Ok(Ending::Done)
            }
            Completion::SessionNotActive => {
                // Nothing was written: the failure goes on the same connection.
                let session = sessions::find(&mut tx, self.session_id)
                    .await
                    .context("reading the session that refused the question")?;
                let sentence = match session {
                    Some(_) => sentence::<Self>(SESSION_NOT_ACTIVE),
                    None => operations::SESSION_GONE.to_owned(),
                };
                let ending = fail(&mut tx, self.operation_id, &sentence).await?;
                tx.commit()
                    .await
                    .context("committing the operation's failure")?;
                finished.send(&mut conn).await;
                Ok(ending)
            }
            Completion::AlreadyStored => {
                tracing::info!("another delivery already stored this operation's question");
                Ok(Ending::Done)
            }
            Completion::OperationFinished => {
                // Failed meanwhile by another delivery, or cancelled: keep its verdict.
                tracing::info!("operation finished elsewhere; discarding this question");
                Ok(Ending::Done)
            }
        }
    }
}
