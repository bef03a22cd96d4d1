use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Run `f` with recording switched off on this thread: ops compute their
/// values and record nothing, so no backward memory is held (inference,
/// evaluation, frozen feature extraction). Nested calls are fine.
///
/// ```
/// use convnet_autograd::{no_grad, Tape};
/// use convnet_tensor::Tensor;
/// let tape = Tape::new();
/// let x = tape.var(Tensor::ones(&[2]));
/// let y = no_grad(|| x.relu().unwrap());
/// assert!(!y.requires_grad());
/// assert_eq!(tape.len(), 1); // only the leaf
/// ```
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// True unless inside [`no_grad`].
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}
