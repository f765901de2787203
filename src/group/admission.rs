//! Admission for the async group: which members may start, under the
//! limit, and the hand-over of admitted members to the driver.
//!
//! The state lock is held only briefly: never while a member is polled or
//! dropped, nor while a waker is called (see `members`' lock order).

use std::collections::VecDeque;
use std::future::Future;

use super::members::{Member, Ready};
use crate::error::Cause;
use crate::guard::CancelGuard;
use std::sync::Arc;

use crate::sync::Mutex;

/// What the group shares with its [`Spawner`](super::Spawner)s.
pub(crate) struct Shared<'a> {
    /// Cancels the group's context.
    pub(crate) guard: CancelGuard,
    /// Wakes the driver when a member is admitted.
    pub(crate) ready: Arc<Ready>,
    state: Mutex<State<'a>>,
}

/// Which members may start.
struct State<'a> {
    limit: Option<usize>,
    /// Members admitted and not finished (in `admitted` or running).
    active: usize,
    /// Admitted, waiting for the driver to take them.
    admitted: Vec<Member<'a>>,
    /// Beyond the limit, in spawn order.
    queued: VecDeque<Member<'a>>,
    /// The group is gone: spawns drop their member.
    closed: bool,
}

impl State<'_> {
    fn has_room(&self) -> bool {
        self.limit.is_none_or(|limit| self.active < limit)
    }
}

/// The members taken out of a group, to be dropped with no lock held.
pub(crate) type Dropped<'a> = (Vec<Member<'a>>, VecDeque<Member<'a>>);

impl<'a> Shared<'a> {
    pub(crate) fn new(guard: CancelGuard, ready: Arc<Ready>) -> Shared<'a> {
        let state = State {
            limit: None,
            active: 0,
            admitted: Vec::new(),
            queued: VecDeque::new(),
            closed: false,
        };
        Shared {
            guard,
            ready,
            state: Mutex::new(state),
        }
    }

    /// `(limit, admitted, queued)`, for `Debug`.
    pub(crate) fn counts(&self) -> (Option<usize>, usize, usize) {
        let state = self.state.lock();
        (state.limit, state.admitted.len(), state.queued.len())
    }

    pub(crate) fn spawn(&self, member: Member<'a>) {
        let mut state = self.state.lock();
        if state.closed {
            drop(state);
            drop(member);
        } else if state.queued.is_empty() && state.has_room() {
            state.active += 1;
            state.admitted.push(member);
            drop(state);
            self.ready.wake_driver();
        } else {
            state.queued.push_back(member);
        }
    }

    pub(crate) fn try_spawn<F>(&self, member: F) -> Result<(), F>
    where
        F: Future<Output = Result<(), Cause>> + Send + 'a,
    {
        {
            let mut state = self.state.lock();
            if state.closed || !state.queued.is_empty() || !state.has_room() {
                return Err(member);
            }
            state.active += 1;
            state.admitted.push(Box::pin(member));
        }
        self.ready.wake_driver();
        Ok(())
    }

    pub(crate) fn set_limit(&self, limit: Option<usize>) {
        let admitted = {
            let mut state = self.state.lock();
            state.limit = limit;
            let mut admitted = false;
            while state.has_room() {
                let Some(member) = state.queued.pop_front() else {
                    break;
                };
                state.active += 1;
                state.admitted.push(member);
                admitted = true;
            }
            admitted
        };
        if admitted {
            self.ready.wake_driver();
        }
    }

    pub(crate) fn take_admitted(&self) -> Vec<Member<'a>> {
        std::mem::take(&mut self.state.lock().admitted)
    }

    /// A running member ended: frees its place and admits queued members.
    pub(crate) fn finish_one(&self, admitted: &mut Vec<Member<'a>>) {
        let mut state = self.state.lock();
        state.active -= 1;
        while state.has_room() {
            let Some(member) = state.queued.pop_front() else {
                break;
            };
            state.active += 1;
            admitted.push(member);
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        let state = self.state.lock();
        state.active == 0 && state.queued.is_empty()
    }

    /// Takes every member not yet running out; `close` also refuses new ones.
    pub(crate) fn take_all(&self, close: bool) -> Dropped<'a> {
        let mut state = self.state.lock();
        state.closed |= close;
        state.active = 0;
        (
            std::mem::take(&mut state.admitted),
            std::mem::take(&mut state.queued),
        )
    }
}
