//! A query's batches until the client cancels it (PostgreSQL's CancelRequest, Flight SQL's
//! CancelFlightInfo): each door says how its cancellation and errors read.

use std::pin::Pin;
use std::task::{Context, Poll};

use cityhub_query::{Batches, QueryError};
use datafusion::arrow::array::RecordBatch;
use futures::{Stream, StreamExt};

/// The engine's batches, ended early by a cancellation. Dropping the engine's stream is
/// what stops DataFusion's work, and the query is audited as cancelled.
pub struct UntilCancelled<E> {
    batches: Option<Batches>,
    cancelled: Pin<Box<dyn Future<Output = ()> + Send>>,
    on_cancel: fn() -> E,
    on_error: fn(QueryError) -> E,
}

impl<E> UntilCancelled<E> {
    /// `cancelled` resolves when the client cancels; `on_cancel` and `on_error` are the
    /// door's errors for a cancellation and for the query's own failure.
    pub fn new(
        batches: Batches,
        cancelled: impl Future<Output = ()> + Send + 'static,
        on_cancel: fn() -> E,
        on_error: fn(QueryError) -> E,
    ) -> Self {
        Self {
            batches: Some(batches),
            cancelled: Box::pin(cancelled),
            on_cancel,
            on_error,
        }
    }
}

impl<E> Stream for UntilCancelled<E> {
    type Item = Result<RecordBatch, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.batches.is_none() {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.batches = None;
            return Poll::Ready(Some(Err((self.on_cancel)())));
        }
        let Some(batches) = self.batches.as_mut() else {
            return Poll::Ready(None);
        };
        let next = batches.poll_next_unpin(cx);
        match next {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(Ok(batch))),
            Poll::Ready(Some(Err(err))) => {
                self.batches = None;
                Poll::Ready(Some(Err((self.on_error)(err))))
            }
            Poll::Ready(None) => {
                self.batches = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
