//! [`TensorRef`]: a device buffer with the shape and strides a kernel reads it by.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::KernelError;

/// A device tensor: a handle, its shape and strides in elements, and its element size.
///
/// Built only through [`new`](Self::new) or [`contiguous`](Self::contiguous), which check that
/// the handle holds every element the shape and strides reach and that the furthest element is
/// addressable by the kernels' 32-bit indices — so a launch that checks shapes against each
/// other reads and writes inside its buffers.
#[derive(Debug, Clone)]
pub struct TensorRef {
    handle: Handle,
    shape: Vec<usize>,
    strides: Vec<usize>,
    elem_size: usize,
}

/// Largest element offset the kernels can form: they index with 32-bit unsigned integers.
pub(crate) const MAX_OFFSET: u64 = u32::MAX as u64;

impl TensorRef {
    /// A tensor of `shape` and `strides` (in elements of `elem_size` bytes) in `handle`.
    ///
    /// `name` is the argument the error names if the handle is too small, the ranks differ or
    /// an offset passes 32-bit indexing.
    pub fn new(
        name: &'static str,
        handle: Handle,
        shape: Vec<usize>,
        strides: Vec<usize>,
        elem_size: usize,
    ) -> Result<Self, KernelError> {
        if shape.len() != strides.len() {
            return Err(KernelError::shape(
                name,
                format!("as many strides as dims, got {shape:?} / {strides:?}"),
            ));
        }
        let elements: u128 = shape.iter().map(|&s| s as u128).product();
        if elements > 0 {
            let last: u128 = shape
                .iter()
                .zip(&strides)
                .map(|(&s, &st)| (s as u128 - 1) * st as u128)
                .sum();
            if last > MAX_OFFSET as u128 {
                return Err(KernelError::unsupported(
                    "n",
                    format!(
                        "{name}: element offset {last} passes the kernels' 32-bit indexing \
                         (split the batch or the heads)"
                    ),
                ));
            }
            let needed = (last + 1) * elem_size as u128;
            let held = handle.size_in_used() as u128;
            if needed > held {
                return Err(KernelError::shape(
                    name,
                    format!(
                        "a buffer of at least {needed} bytes for shape {shape:?}, strides \
                         {strides:?}, got {held}"
                    ),
                ));
            }
        }
        Ok(Self {
            handle,
            shape,
            strides,
            elem_size,
        })
    }

    /// A contiguous (row-major) tensor of `shape` in `handle`.
    pub fn contiguous(
        name: &'static str,
        handle: Handle,
        shape: Vec<usize>,
        elem_size: usize,
    ) -> Result<Self, KernelError> {
        let strides = contiguous_strides(&shape);
        Self::new(name, handle, shape, strides, elem_size)
    }

    /// The buffer.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Checks that the runtime of `client` can bind this tensor's buffer to a kernel (`name`:
    /// the argument an error names). wgpu binds a storage buffer of at most
    /// `max_storage_buffer_binding_size` bytes (CubeCL's `max_page_size` there: 128 MiB on
    /// lavapipe and WebGPU's default) and drops a dispatch that binds more without an error,
    /// which would leave the outputs unwritten; CUDA takes pointers and has no such limit.
    pub fn expect_bindable(&self, name: &'static str, client: &Client) -> Result<(), KernelError> {
        if !client.name().starts_with("wgpu") {
            return Ok(());
        }
        let (bytes, limit) = (
            self.handle.size_in_used(),
            client.properties().memory.max_page_size,
        );
        if bytes > limit {
            return Err(KernelError::unsupported(
                "n",
                format!(
                    "{name}: a buffer of {bytes} B passes the largest storage buffer this \
                     device binds ({limit} B); split the batch or the heads"
                ),
            ));
        }
        Ok(())
    }

    /// [`expect_bindable`](Self::expect_bindable) for each named tensor that is present.
    pub(crate) fn expect_all_bindable(
        client: &Client,
        tensors: &[(&'static str, Option<&TensorRef>)],
    ) -> Result<(), KernelError> {
        tensors
            .iter()
            .filter_map(|&(name, t)| t.map(|t| (name, t)))
            .try_for_each(|(name, t)| t.expect_bindable(name, client))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Bytes per element.
    pub fn elem_size(&self) -> usize {
        self.elem_size
    }

    /// Whether the last dim is contiguous and every other stride a multiple of `width`, so
    /// that rows can be read as `width`-element vectors.
    pub fn rows_aligned(&self, width: usize) -> bool {
        match self.strides.split_last() {
            Some((&last, rest)) => last == 1 && rest.iter().all(|s| s % width == 0),
            None => false,
        }
    }

    /// Whether the tensor is row-major contiguous.
    pub fn is_contiguous(&self) -> bool {
        self.strides == contiguous_strides(&self.shape)
    }

    /// Checks the shape against `expected` (`what` words it for the error).
    pub(crate) fn expect_shape(
        &self,
        name: &'static str,
        expected: &[usize],
        what: &str,
    ) -> Result<(), KernelError> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(KernelError::shape(
                name,
                format!("{what} = {expected:?}, got {:?}", self.shape),
            ))
        }
    }

    /// Checks the element size against `size` bytes.
    pub(crate) fn expect_elem(&self, name: &'static str, size: usize) -> Result<(), KernelError> {
        if self.elem_size == size {
            Ok(())
        } else {
            Err(KernelError::shape(
                name,
                format!("{size}-byte elements, got {}", self.elem_size),
            ))
        }
    }

    /// A 1×1 view of the first element, for a kernel argument that is never read.
    pub(crate) fn stand_in(&self) -> TensorRef {
        TensorRef {
            handle: self.handle.clone(),
            shape: vec![1, 1],
            strides: vec![1, 1],
            elem_size: self.elem_size,
        }
    }

    pub(crate) fn arg(&self) -> TensorArg {
        // SAFETY: `new` checked that the handle holds every element the shape and strides reach.
        unsafe {
            TensorArg::from_raw_parts(
                self.handle.clone(),
                self.strides.clone().into(),
                self.shape.clone().into(),
            )
        }
    }
}

/// Row-major strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;

    /// On wgpu a tensor one page past the largest storage binding (128 MiB on lavapipe) is
    /// refused by name — a dispatch that bound it would be dropped without an error — and one
    /// at the limit passes. Skipped without an adapter or where the limit passes 1 GiB (too
    /// much to allocate in a unit test).
    #[test]
    fn a_buffer_past_the_largest_binding_is_refused() {
        let Ok(client) = std::panic::catch_unwind(|| {
            cubecl::Device::Wgpu(cubecl::wgpu::WgpuDevice::default()).client()
        }) else {
            return;
        };
        let limit = client.properties().memory.max_page_size as usize;
        if limit > 1 << 30 {
            return;
        }
        let at = TensorRef::contiguous("q", client.empty(limit), vec![limit / 4], 4).unwrap();
        assert_eq!(at.expect_bindable("q", &client), Ok(()));
        let past = limit / 4 + 1024;
        let over = TensorRef::contiguous("q", client.empty(past * 4), vec![past], 4).unwrap();
        let err = over.expect_bindable("q", &client).unwrap_err();
        assert!(
            matches!(&err, KernelError::Unsupported { field: "n", rule } if rule.contains("q:")),
            "{err}"
        );
    }
}
