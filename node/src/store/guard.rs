//! Panics inside redb turned into [`StoreError::Damaged`], without the panic's own
//! report on stderr.
//!
//! Some damaged files make redb panic instead of returning an error (an assertion while
//! opening, an unreachable branch in a B-tree walk). [`guard`] catches that; a panic
//! hook, installed once, keeps the default "thread panicked at …" report for panics
//! outside a guard only, so an operator sees one message that says what to do, with
//! where redb gave up, and never a panic.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::Once;

use super::StoreError;

thread_local! {
    /// How many [`guard`]s this thread is inside (they can nest).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic caught by a guard on this thread happened, `file:line`.
    static CAUGHT_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Leaves the guard when dropped, also when the closure unwinds.
struct Inside;

impl Inside {
    fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get().saturating_add(1)));
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Installs (once per process) the hook that records, instead of printing, panics
/// raised inside a guard. Other panics go to the hook that was there before.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) > 0 {
                let at = info.location().map(|l| {
                    let file = Path::new(l.file())
                        .file_name()
                        .map_or_else(|| l.file().to_string(), |f| f.to_string_lossy().into());
                    format!("{file}:{}", l.line())
                });
                CAUGHT_AT.with(|c| *c.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic inside redb into [`StoreError::Damaged`] naming `path`,
/// the panic's message and where it was raised.
pub(super) fn guard<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    install_hook();
    let caught = {
        let _inside = Inside::enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    };
    caught.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "redb panicked".to_string());
        let detail = match CAUGHT_AT.with(|c| c.borrow_mut().take()) {
            Some(at) => format!("{message}, at {at}"),
            None => message,
        };
        Err(StoreError::Damaged {
            path: path.to_path_buf(),
            detail,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_a_guard_becomes_damaged_with_its_place() {
        let path = Path::new("/nowhere/tocsin.redb");
        let r: Result<(), StoreError> = guard(path, || panic!("entered unreachable code"));
        match r {
            Err(StoreError::Damaged { path: p, detail }) => {
                assert_eq!(p, path);
                assert!(
                    detail.starts_with("entered unreachable code, at guard.rs:"),
                    "{detail}"
                );
            }
            other => panic!("expected Damaged, got {other:?}"),
        }
        // Nested guards and a later call leave the thread outside any guard.
        let r: Result<u8, StoreError> = guard(path, || guard(path, || Ok(7)));
        assert_eq!(r.ok(), Some(7));
        assert_eq!(DEPTH.with(Cell::get), 0);
    }
}
