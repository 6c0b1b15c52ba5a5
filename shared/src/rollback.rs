//! Undo on failure: an ADD records each step it completed; if it fails part-way, dropping the
//! [`Rollback`] undoes those steps in reverse (IPAM DEL, delete the veth, remove rules) before
//! the error is returned. A successful ADD calls [`Rollback::commit`].

use crate::error::Result;

type Step<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

/// Undo steps, run in reverse order on drop unless committed.
#[must_use = "a Rollback undoes its steps when dropped; call commit() on success"]
pub struct Rollback<'a> {
    steps: Vec<(String, Step<'a>)>,
}

impl<'a> Rollback<'a> {
    pub fn new() -> Self {
        Rollback { steps: Vec::new() }
    }

    /// Record how to undo a step that just succeeded.
    pub fn push(&mut self, what: impl Into<String>, undo: impl FnOnce() -> Result<()> + 'a) {
        self.steps.push((what.into(), Box::new(undo)));
    }

    /// The work succeeded: forget the undo steps.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Default for Rollback<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Rollback<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.steps.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Rollback").field("steps", &names).finish()
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            match undo() {
                Ok(()) => tracing::debug!("rolled back: {what}"),
                Err(e) => tracing::warn!("rolling back {what} failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CniError;
    use std::cell::RefCell;

    #[test]
    fn undoes_in_reverse_unless_committed() {
        let log = RefCell::new(Vec::new());
        {
            let mut rb = Rollback::new();
            rb.push("a", || {
                log.borrow_mut().push("undo a");
                Ok(())
            });
            rb.push("b", || {
                log.borrow_mut().push("undo b");
                Err(CniError::internal("b failed"))
            });
            rb.push("c", || {
                log.borrow_mut().push("undo c");
                Ok(())
            });
        }
        assert_eq!(
            *log.borrow(),
            ["undo c", "undo b", "undo a"],
            "a failing step does not stop the others"
        );
        let mut rb = Rollback::new();
        rb.push("x", || {
            log.borrow_mut().push("undo x");
            Ok(())
        });
        rb.commit();
        assert_eq!(log.borrow().len(), 3);
    }
}
