//! Image folders, as Keras's `ImageDataGenerator.flow_from_directory` reads
//! them: one class per subfolder, classes sorted by name, batches of
//! `(images, labels)` tensors from an endless iterator.
//!
//! ```no_run
//! use convnet_data::augment::ImageDataGenerator;
//! use convnet_data::directory::{ClassMode, FlowOptions};
//! let train_datagen = ImageDataGenerator::new()
//!     .rescale(1.0 / 255.0)
//!     .shear_range(0.2)
//!     .zoom_range(0.2)
//!     .horizontal_flip(true);
//! let mut train = train_datagen.flow_from_directory(
//!     "data/cats_and_dogs_filtered/train",
//!     FlowOptions { target_size: (150, 150), batch_size: 20, class_mode: ClassMode::Binary,
//!         ..Default::default() },
//! )?; // prints "Found 2000 images belonging to 2 classes."
//! assert_eq!(train.class_indices()["cats"], 0);
//! let (x, y) = train.next().unwrap()?;
//! assert_eq!(x.shape(), &[20, 150, 150, 3]);
//! assert_eq!(y.shape(), &[20, 1]);
//! # Ok::<(), convnet_data::DataError>(())
//! ```
//!
//! Each batch's images are decoded, resized and augmented in parallel with
//! rayon, and the next batches are prepared on a background thread (a
//! bounded queue of [`FlowOptions::prefetch`] batches) while the caller
//! trains. Pass `p` (0, 1, 2, ...) of the files uses the permutation drawn
//! from `(seed, p)`, and image `i` of pass `p` the augmentation drawn from
//! `(seed, p, i)`, so batches are the same whatever the thread count.
//!
//! Speed: JPEGs are decoded with zune-jpeg into a per-thread buffer; with
//! no augmentation the resize is Keras's nearest through index tables
//! (the rescale folded in), and a YCbCr JPEG stays in YCbCr: only the
//! pixels the resize picks are converted to RGB (zune-jpeg's own integer
//! conversion, the same values); with a geometric
//! augmentation, Keras's matrix for the target size is composed with the
//! resize and the image is sampled ONCE, bilinearly (fixed point), from the
//! full-size decoded image straight into the batch (Keras resizes to the
//! target size with nearest first, then transforms that small image; the
//! one pass is as fast and loses less; for RGB, eight pixels at a time
//! with AVX2 when the CPU has it, the same values). A YCbCr JPEG stays in
//! YCbCr there too: Y, Cb, Cr are interpolated and only the output pixels
//! are converted (0.25 level from converting the whole image first on
//! average, see `fast::affine_resample_ycbcr`). The batch buffer is
//! never zeroed: these passes write every value of their slot.
//!
//! Bad files: see [`DirectoryIterator`] (skipped with one warning, the
//! batch filled from the next files, a count per pass).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use convnet_tensor::{Rng, Tensor};
use rayon::prelude::*;

use crate::augment::ImageDataGenerator;
use crate::fast;
use crate::{DataError, Result};

/// The file extensions read, compared case-insensitively (Keras's
/// `white_list_formats`).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff"];

/// How labels are encoded (Keras's `class_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassMode {
    /// One-hot labels `(n, classes)` (Keras's default).
    #[default]
    Categorical,
    /// Labels `(n, 1)` of 0.0 or 1.0; exactly two classes.
    Binary,
    /// Class indices `(n,)` as `f32`.
    Sparse,
    /// No labels: the label tensor is empty, `(n, 0)`.
    None,
    /// The labels are the images themselves (autoencoders).
    Input,
}

/// The channels of the images (Keras's `color_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// Three channels (Keras's default).
    #[default]
    Rgb,
    /// One channel, PIL's luma `(299 R + 587 G + 114 B) / 1000`.
    Grayscale,
    /// Four channels.
    Rgba,
}

impl ColorMode {
    /// The channel count.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
            ColorMode::Rgba => 4,
        }
    }
}

/// How images are resized to `target_size` (Keras's `interpolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Nearest neighbour, PIL's rule (Keras's default).
    #[default]
    Nearest,
    /// Bilinear (triangle filter, antialiased when shrinking, like PIL's).
    Bilinear,
}

/// The options of [`ImageDataGenerator::flow_from_directory`], with Keras's
/// defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowOptions {
    /// `(height, width)` every image is resized to; Keras's default 256x256.
    pub target_size: (usize, usize),
    /// Channels: rgb (default), grayscale or rgba.
    pub color_mode: ColorMode,
    /// The class folders to use, in this order; `None` (default) takes every
    /// subfolder, sorted by name.
    pub classes: Option<Vec<String>>,
    /// Label encoding; categorical by default.
    pub class_mode: ClassMode,
    /// Images per batch (32); the last batch of a pass may be smaller.
    pub batch_size: usize,
    /// A new random order each pass (true).
    pub shuffle: bool,
    /// The seed of the order and of the augmentation; `None` takes one from
    /// the clock.
    pub seed: Option<u64>,
    /// The resize filter; nearest by default. With a geometric
    /// augmentation the resize is part of the one bilinear pass instead.
    pub interpolation: Interpolation,
    /// Print `Found N images belonging to K classes.` (true).
    pub verbose: bool,
    /// Batches prepared ahead on a background thread (2); 0 builds each
    /// batch on the caller's thread when it is asked for (inside the
    /// caller's rayon pool).
    pub prefetch: usize,
    /// Images with more pixels than this are refused before they are
    /// decoded (default 100 megapixels).
    pub max_pixels: u64,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions {
            target_size: (256, 256),
            color_mode: ColorMode::Rgb,
            classes: None,
            class_mode: ClassMode::Categorical,
            batch_size: 32,
            shuffle: true,
            seed: None,
            interpolation: Interpolation::Nearest,
            verbose: true,
            prefetch: 2,
            max_pixels: 100_000_000,
        }
    }
}

impl ImageDataGenerator {
    /// Lists the images under `directory` (one subfolder per class) and
    /// returns the endless batch iterator over them, as Keras's
    /// `flow_from_directory`. Errors: a missing or unreadable folder, no
    /// class folder, no image, a class mode that does not fit the classes
    /// (binary needs exactly two), a zero batch size or target size.
    pub fn flow_from_directory(
        &self,
        directory: impl AsRef<Path>,
        options: FlowOptions,
    ) -> Result<DirectoryIterator> {
        DirectoryIterator::new(directory.as_ref(), self.clone(), options)
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Every image file under `dir`, recursively, sorted by path.
fn list_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| io_err(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            list_images(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// What the batches are made of, shared with the background thread.
#[derive(Debug)]
struct Dataset {
    directory: PathBuf,
    files: Vec<PathBuf>,
    filenames: Vec<String>,
    labels: Vec<usize>,
    class_names: Vec<String>,
    generator: ImageDataGenerator,
    options: FlowOptions,
    seed: u64,
    /// Files found unreadable: skipped from then on, never read again.
    bad: Vec<AtomicBool>,
    bad_count: AtomicUsize,
}

/// Where the batch producer stands: the pass, its file order, the next
/// position in that order, and the files skipped so far in the pass.
#[derive(Debug)]
struct Position {
    pass: u64,
    order: Vec<usize>,
    next: usize,
    skipped: usize,
}

/// One batch from the producer, with what the consumer reports.
#[derive(Debug)]
struct Produced {
    item: Result<(Tensor, Tensor)>,
    /// Files skipped in this batch's pass, up to and including this batch.
    skipped: usize,
    /// Passes that ended with (or just before) this batch, with their
    /// skipped-file counts.
    finished: Vec<(u64, usize)>,
}

/// The endless iterator of `(images, labels)` batches that
/// [`ImageDataGenerator::flow_from_directory`] returns. Images are NHWC
/// `(n, height, width, channels)`, values 0..255 times the rescale; labels
/// as [`ClassMode`] says. After the last (possibly smaller) batch of a pass
/// comes the first batch of the next pass, in a new order when shuffling.
///
/// A file that cannot be read or decoded (empty, truncated, not an image,
/// over [`FlowOptions::max_pixels`], unreadable, deleted since the folder
/// was listed) is skipped with one warning on stderr naming it, and never
/// read again; its batch is filled from the next files of the pass, so
/// batches keep their size. At the end of a pass that skipped files, the
/// count is printed (`Skipped N unreadable image(s) in pass P`) and
/// [`skipped`](Self::skipped) / [`last_pass_skipped`](Self::last_pass_skipped)
/// return it. When no file at all can be read, every batch is an `Err`.
pub struct DirectoryIterator {
    data: Arc<Dataset>,
    cursor: Option<Position>,
    rx: Option<Receiver<Produced>>,
    worker: Option<JoinHandle<()>>,
    skipped: usize,
    last_pass_skipped: Option<usize>,
}

impl std::fmt::Debug for DirectoryIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryIterator")
            .field("directory", &self.data.directory)
            .field("samples", &self.data.files.len())
            .field("classes", &self.data.class_names)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl DirectoryIterator {
    fn new(directory: &Path, generator: ImageDataGenerator, options: FlowOptions) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(format_err(directory, "batch_size must be at least 1"));
        }
        if options.target_size.0 == 0 || options.target_size.1 == 0 {
            return Err(format_err(directory, "target_size must be at least 1x1"));
        }
        let meta = std::fs::metadata(directory).map_err(|e| io_err(directory, e))?;
        if !meta.is_dir() {
            return Err(format_err(directory, "not a directory"));
        }
        let class_names = match &options.classes {
            Some(c) => c.clone(),
            None => {
                let mut names = Vec::new();
                for e in std::fs::read_dir(directory).map_err(|e| io_err(directory, e))? {
                    let e = e.map_err(|e| io_err(directory, e))?;
                    if e.path().is_dir() {
                        names.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
                names.sort();
                names
            }
        };
        if class_names.is_empty() {
            return Err(format_err(
                directory,
                "no class subfolder (expected one folder per class)",
            ));
        }
        if options.class_mode == ClassMode::Binary && class_names.len() != 2 {
            return Err(format_err(
                directory,
                format!(
                    "class_mode binary needs exactly 2 classes, found {} ({})",
                    class_names.len(),
                    class_names.join(", ")
                ),
            ));
        }
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for (k, name) in class_names.iter().enumerate() {
            let sub = directory.join(name);
            let before = files.len();
            list_images(&sub, &mut files)?;
            labels.resize(labels.len() + files.len() - before, k);
        }
        if options.verbose {
            println!(
                "Found {} images belonging to {} classes.",
                files.len(),
                class_names.len()
            );
        }
        if files.is_empty() {
            return Err(format_err(
                directory,
                format!(
                    "no image files ({}) in the class folders",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        let filenames = files
            .iter()
            .map(|f| f.strip_prefix(directory).unwrap_or(f).display().to_string())
            .collect();
        let seed = options.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let bad = files.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(DirectoryIterator {
            data: Arc::new(Dataset {
                directory: directory.to_path_buf(),
                files,
                filenames,
                labels,
                class_names,
                generator,
                options,
                seed,
                bad,
                bad_count: AtomicUsize::new(0),
            }),
            cursor: None,
            rx: None,
            worker: None,
            skipped: 0,
            last_pass_skipped: None,
        })
    }

    /// The number of images (Keras's `samples`).
    pub fn samples(&self) -> usize {
        self.data.files.len()
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.data.class_names.len()
    }

    /// Class name to index, e.g. `{"cats": 0, "dogs": 1}`.
    pub fn class_indices(&self) -> BTreeMap<String, usize> {
        self.data
            .class_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect()
    }

    /// The class names, in index order.
    pub fn class_names(&self) -> &[String] {
        &self.data.class_names
    }

    /// Each image's class index, in file order (Keras's `classes`).
    pub fn labels(&self) -> &[usize] {
        &self.data.labels
    }

    /// Each image's path relative to the directory, in file order (Keras's
    /// `filenames`).
    pub fn filenames(&self) -> &[String] {
        &self.data.filenames
    }

    /// The images' full paths, in file order.
    pub fn filepaths(&self) -> &[PathBuf] {
        &self.data.files
    }

    /// The seed in use (the given one, or the one taken from the clock).
    pub fn seed(&self) -> u64 {
        self.data.seed
    }

    /// Batches in one pass over the files: `ceil(samples / batch_size)`
    /// (Keras's `len(iterator)`); a pass that skips unreadable files may
    /// have fewer.
    pub fn batches_per_epoch(&self) -> usize {
        self.data.files.len().div_ceil(self.data.options.batch_size)
    }

    /// The same as [`batches_per_epoch`](Self::batches_per_epoch).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.batches_per_epoch()
    }

    /// The file indices, in order, of pass `pass`.
    pub fn pass_order(&self, pass: u64) -> Vec<usize> {
        self.data.order(pass)
    }

    /// Builds batch `index` of pass `pass` directly, on the calling thread
    /// (in parallel on the caller's rayon pool): the files at positions
    /// `index * batch_size ..` of [`pass_order`](Self::pass_order), without
    /// the unreadable ones (so the batch may be smaller; an `Err` when none
    /// can be read). When every file reads, the iterator's batches are
    /// exactly these.
    pub fn batch(&self, pass: u64, index: usize) -> Result<(Tensor, Tensor)> {
        let order = self.data.order(pass);
        let bs = self.data.options.batch_size;
        let start = index * bs;
        let end = (start + bs).min(order.len());
        if start >= end {
            return Err(format_err(
                &self.data.directory,
                format!(
                    "batch {index} is past the end of the pass ({} batches)",
                    self.batches_per_epoch()
                ),
            ));
        }
        let mut x = uninit_batch((end - start) * self.data.image_size());
        let ok = self.data.load_many(pass, &order[start..end], &mut x);
        let idx = compact(&order[start..end], &ok, &mut x, self.data.image_size());
        // SAFETY: `load_many` initialised the slots of the images read,
        // which `compact` moved to the front.
        let x = unsafe { assume_init_prefix(x, idx.len() * self.data.image_size()) };
        if idx.is_empty() {
            return Err(format_err(
                &self.data.directory,
                format!("no file of batch {index} of pass {pass} could be read"),
            ));
        }
        self.data.tensors(&idx, x)
    }

    /// Files skipped in the pass of the latest batch handed out, up to and
    /// including that batch (after the last batch of a pass: that pass's
    /// count). Known-unreadable files count in every pass they are skipped.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The skipped-file count of the latest pass that has ended (`None`
    /// before the end of the first pass).
    pub fn last_pass_skipped(&self) -> Option<usize> {
        self.last_pass_skipped
    }

    /// Every file found unreadable so far, in file order (the background
    /// thread may have found some ahead of the batches handed out).
    pub fn skipped_files(&self) -> Vec<PathBuf> {
        self.data
            .bad
            .iter()
            .zip(&self.data.files)
            .filter(|(b, _)| b.load(Ordering::Relaxed))
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Starts again from the first batch of pass 0 (Keras's `reset`).
    /// Files found unreadable stay skipped.
    pub fn reset(&mut self) {
        self.stop_worker();
        self.cursor = None;
        self.skipped = 0;
    }

    fn stop_worker(&mut self) {
        self.rx = None; // the worker's next send fails, and it ends
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }

    fn start_worker(&mut self) {
        let (tx, rx) = sync_channel(self.data.options.prefetch);
        let data = Arc::clone(&self.data);
        let mut cursor = self.cursor.take().unwrap_or_else(|| data.cursor(0));
        let worker = std::thread::Builder::new()
            .name("convnet-data-prefetch".into())
            .spawn(move || loop {
                if tx.send(data.next_batch(&mut cursor)).is_err() {
                    return;
                }
            });
        match worker {
            Ok(w) => {
                self.rx = Some(rx);
                self.worker = Some(w);
            }
            Err(_) => {
                // No thread: build batches on the caller's thread instead
                // (the cursor went with the closure: start the pass again).
                self.rx = None;
                self.worker = None;
            }
        }
    }

    fn produce_here(&mut self) -> Produced {
        let data = Arc::clone(&self.data);
        let cursor = self.cursor.get_or_insert_with(|| data.cursor(0));
        data.next_batch(cursor)
    }
}

impl Drop for DirectoryIterator {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl Iterator for DirectoryIterator {
    type Item = Result<(Tensor, Tensor)>;

    /// The next batch; never `None`.
    fn next(&mut self) -> Option<Self::Item> {
        if self.data.options.prefetch > 0 && self.rx.is_none() && self.worker.is_none() {
            self.start_worker();
        }
        let produced = match &self.rx {
            Some(rx) => match rx.recv() {
                Ok(p) => p,
                Err(_) => {
                    // The worker died (it should not): go on synchronously.
                    self.rx = None;
                    self.produce_here()
                }
            },
            None => self.produce_here(),
        };
        for &(pass, n) in &produced.finished {
            if n > 0 {
                eprintln!(
                    "Skipped {n} unreadable image(s) in pass {pass} of {} ({} images).",
                    self.data.directory.display(),
                    self.data.files.len()
                );
            }
            self.last_pass_skipped = Some(n);
        }
        self.skipped = produced.skipped;
        Some(produced.item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// Moves the images of `idx` whose `ok` is set to the front of `x` (one
/// image of `size` values each) and returns their indices.
fn compact<T: Copy>(idx: &[usize], ok: &[bool], x: &mut [T], size: usize) -> Vec<usize> {
    let mut kept = Vec::with_capacity(idx.len());
    for (slot, (&i, &good)) in idx.iter().zip(ok).enumerate() {
        if good {
            let to = kept.len();
            if to != slot {
                x.copy_within(slot * size..(slot + 1) * size, to * size);
            }
            kept.push(i);
        }
    }
    kept
}

/// A batch buffer of `n` values, not initialised (see
/// [`Dataset::load_many`], which writes the slots of the images it reads).
fn uninit_batch(n: usize) -> Vec<MaybeUninit<f32>> {
    let mut x = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` needs no initialisation; the capacity is `n`.
    unsafe { x.set_len(n) };
    x
}

/// `slot` as the initialised values it holds.
///
/// # Safety
/// Every value of `slot` must have been written.
unsafe fn assume_init_mut(slot: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: initialised (the caller's promise); `MaybeUninit<f32>` has
    // the layout of `f32`.
    unsafe { &mut *(slot as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The first `len` values of `x`, which must all be initialised, as a
/// `Vec<f32>` (no copy).
///
/// # Safety
/// `x[..len]` must be initialised.
unsafe fn assume_init_prefix(mut x: Vec<MaybeUninit<f32>>, len: usize) -> Vec<f32> {
    x.truncate(len);
    let mut x = std::mem::ManuallyDrop::new(x);
    // SAFETY: same allocation, layout and capacity; the `len` values are
    // initialised (the caller's promise).
    unsafe { Vec::from_raw_parts(x.as_mut_ptr().cast::<f32>(), len, x.capacity()) }
}

impl Dataset {
    fn image_size(&self) -> usize {
        let (h, w) = self.options.target_size;
        h * w * self.options.color_mode.channels()
    }

    fn order(&self, pass: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        if self.options.shuffle {
            Rng::new(self.seed).fork(0).fork(pass).shuffle(&mut order);
        }
        order
    }

    fn cursor(&self, pass: u64) -> Position {
        Position {
            pass,
            order: self.order(pass),
            next: 0,
            skipped: 0,
        }
    }

    fn is_bad(&self, i: usize) -> bool {
        self.bad[i].load(Ordering::Relaxed)
    }

    /// Records file `i` as unreadable, with one warning the first time.
    fn mark_bad(&self, i: usize, err: &DataError) {
        if !self.bad[i].swap(true, Ordering::Relaxed) {
            self.bad_count.fetch_add(1, Ordering::Relaxed);
            eprintln!("Warning: skipping unreadable image {err}");
        }
    }

    fn all_bad(&self) -> DataError {
        format_err(
            &self.directory,
            format!(
                "none of the {} image files could be read (see the warnings above)",
                self.files.len()
            ),
        )
    }

    /// Loads and augments the images `idx` of pass `pass` into `x` (one
    /// image per slot, in parallel); returns which ones could be read,
    /// recording the others as unreadable.
    ///
    /// The slots may come uninitialised (a fresh batch buffer, never zeroed:
    /// the fast paths write every value): on return, the slot of every
    /// image that could be read is initialised.
    fn load_many(&self, pass: u64, idx: &[usize], x: &mut [MaybeUninit<f32>]) -> Vec<bool> {
        let size = self.image_size();
        let aug_rng = Rng::new(self.seed).fork(1).fork(pass);
        // Without augmentation, Keras's nearest resize of an RGB image uses
        // a few of its pixels: JPEGs may stay in YCbCr, and only the
        // pixels picked are converted (as `render` would do it, same values).
        // With augmentation, the fused resampling interpolates Y, Cb, Cr
        // and converts each output pixel (`render`).
        let augments = self.generator.augments();
        let ycbcr_ok = self.options.color_mode == ColorMode::Rgb
            && (augments || self.options.interpolation == Interpolation::Nearest);
        x.par_chunks_mut(size)
            .zip(idx.par_iter())
            .map(|(out, &i)| {
                let mut rng = aug_rng.fork(i as u64);
                if ycbcr_ok && !augments {
                    let (th, tw) = self.options.target_size;
                    let rescale = self.generator.rescale.unwrap_or(1.0);
                    let path = &self.files[i];
                    let r = match std::fs::read(path) {
                        Ok(bytes) => {
                            nearest_jpeg(&bytes, self.options.max_pixels, th, tw, rescale, out)
                                .map(Ok)
                                .unwrap_or_else(|| {
                                    with_bytes(
                                        path,
                                        &bytes,
                                        self.options.max_pixels,
                                        ColorMode::Rgb,
                                        true,
                                        |src, h, w, ycbcr| {
                                            if ycbcr {
                                                fast::resize_nearest_ycbcr(
                                                    src, h, w, th, tw, rescale, out,
                                                );
                                                return Ok(());
                                            }
                                            self.render(src, h, w, false, out, &mut rng)
                                        },
                                    )
                                    .and_then(|r| r.map_err(|e| format_err(path, e)))
                                })
                        }
                        Err(e) => Err(io_err(path, e)),
                    };
                    return self.settle(i, r);
                }
                let r = with_pixels(
                    &self.files[i],
                    self.options.max_pixels,
                    self.options.color_mode,
                    ycbcr_ok,
                    |src, h, w, ycbcr| {
                        if ycbcr && !augments {
                            let (th, tw) = self.options.target_size;
                            let rescale = self.generator.rescale.unwrap_or(1.0);
                            fast::resize_nearest_ycbcr(src, h, w, th, tw, rescale, out);
                            return Ok(());
                        }
                        self.render(src, h, w, ycbcr, out, &mut rng)
                    },
                )
                .and_then(|r| r.map_err(|e| format_err(&self.files[i], e)));
                self.settle(i, r)
            })
            .collect()
    }

    /// Whether image `i` was read; if not, records it as unreadable.
    fn settle(&self, i: usize, r: Result<()>) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                self.mark_bad(i, &e);
                false
            }
        }
    }

    /// One decoded image (`h` x `w`, `u8`) to its batch slot: resized,
    /// augmented with the draw from `rng`, rescaled. The geometric
    /// augmentation and the resize are one bilinear pass from the full-size
    /// image (the augmentation's matrix composed with the resize); without
    /// a geometric draw the image is resized as `interpolation` says. The
    /// rescale is folded into that pass unless an intensity change (channel
    /// shift, brightness) comes between.
    ///
    /// With `ycbcr`, `src` is a YCbCr image (3 channels, color mode RGB)
    /// and the result is RGB: the fused pass converts the output pixels
    /// ([`fast::affine_resample_ycbcr`]), the nearest resize the pixels it
    /// picks; any other resize converts the whole image first.
    fn render(
        &self,
        src: &[u8],
        h: usize,
        w: usize,
        ycbcr: bool,
        out: &mut [MaybeUninit<f32>],
        rng: &mut Rng,
    ) -> std::result::Result<(), &'static str> {
        let (th, tw) = self.options.target_size;
        let c = self.options.color_mode.channels();
        let g = &self.generator;
        let rescale = g.rescale.unwrap_or(1.0);
        let ycbcr = ycbcr && c == 3;
        let resize = |scale: f32, out: &mut [MaybeUninit<f32>]| {
            if !ycbcr {
                return resize_into(src, h, w, &self.options, &fast::scale_lut(scale), out);
            }
            if self.options.interpolation == Interpolation::Nearest {
                fast::resize_nearest_ycbcr(src, h, w, th, tw, scale, out);
                return Ok(());
            }
            let rgb = fast::ycbcr_image_to_rgb(src);
            resize_into(&rgb, h, w, &self.options, &fast::scale_lut(scale), out)
        };
        if !g.augments() {
            return resize(rescale, out);
        }
        let params = g.get_random_transform(th, tw, rng);
        let intensity = params.channel_shift_intensity.is_some() || params.brightness.is_some();
        let scale = if intensity { 1.0 } else { rescale };
        let fused = params.matrix(th, tw).and_then(|m| {
            let a = fast::compose_resize(&m, h, w, th, tw);
            if ycbcr {
                fast::affine_resample_ycbcr(src, h, w, &a, g.fill_mode, g.cval, scale, th, tw, out)
            } else {
                fast::affine_resample(src, h, w, c, &a, g.fill_mode, g.cval, scale, th, tw, out)
            }
        });
        if fused.is_none() {
            resize(scale, out)?;
        }
        // SAFETY: the fused pass or the resize wrote every value.
        let out = unsafe { assume_init_mut(out) };
        if fused.is_none() {
            if let Some(m) = params.matrix(th, tw) {
                // A matrix the fused pass refuses (not finite, or far out):
                // the plain pass on the resized image.
                let resized = out.to_vec();
                crate::augment::affine_transform(
                    &resized,
                    th,
                    tw,
                    c,
                    &m,
                    g.fill_mode,
                    g.cval * scale,
                    out,
                );
            }
        }
        if intensity {
            g.apply_intensity(out, &params);
            g.standardize_inplace(out);
        }
        Ok(())
    }

    /// The next batch at `cursor`: `batch_size` readable files (fewer at
    /// the end of a pass), unreadable ones skipped and replaced by the
    /// following files; the cursor moves on, into the next pass when this
    /// one is done.
    fn next_batch(&self, cursor: &mut Position) -> Produced {
        let bs = self.options.batch_size;
        let size = self.image_size();
        let mut finished = Vec::new();
        loop {
            if self.bad_count.load(Ordering::Relaxed) >= self.files.len() {
                return Produced {
                    item: Err(self.all_bad()),
                    skipped: cursor.skipped,
                    finished,
                };
            }
            // Not initialised: `load_many` writes the slots of the images it
            // reads, and `compact` keeps those at the front.
            let mut x = uninit_batch(bs * size);
            let mut idx: Vec<usize> = Vec::with_capacity(bs);
            while idx.len() < bs && cursor.next < cursor.order.len() {
                let mut want = Vec::with_capacity(bs - idx.len());
                while want.len() < bs - idx.len() && cursor.next < cursor.order.len() {
                    let i = cursor.order[cursor.next];
                    cursor.next += 1;
                    if self.is_bad(i) {
                        cursor.skipped += 1;
                    } else {
                        want.push(i);
                    }
                }
                if want.is_empty() {
                    break;
                }
                let at = idx.len() * size;
                let slots = &mut x[at..at + want.len() * size];
                let ok = self.load_many(cursor.pass, &want, slots);
                cursor.skipped += ok.iter().filter(|g| !**g).count();
                idx.extend(compact(&want, &ok, slots, size));
            }
            // SAFETY: the first `idx.len()` slots hold the images read,
            // each fully written by `load_many`.
            let x = unsafe { assume_init_prefix(x, idx.len() * size) };
            let skipped = cursor.skipped;
            if cursor.next >= cursor.order.len() {
                finished.push((cursor.pass, cursor.skipped));
                *cursor = self.cursor(cursor.pass + 1);
            }
            if idx.is_empty() {
                // The rest of the pass was unreadable: on to the next pass.
                continue;
            }
            return Produced {
                item: self.tensors(&idx, x),
                skipped,
                finished,
            };
        }
    }

    /// The batch tensors of the images `x` of the files `idx`.
    fn tensors(&self, idx: &[usize], x: Vec<f32>) -> Result<(Tensor, Tensor)> {
        let (h, w) = self.options.target_size;
        let c = self.options.color_mode.channels();
        let n = idx.len();
        let x = Tensor::from_vec(&[n, h, w, c], x)?;
        let k = self.class_names.len();
        let y = match self.options.class_mode {
            ClassMode::Binary => Tensor::from_vec(
                &[n, 1],
                idx.iter().map(|&i| self.labels[i] as f32).collect(),
            )?,
            ClassMode::Sparse => {
                Tensor::from_vec(&[n], idx.iter().map(|&i| self.labels[i] as f32).collect())?
            }
            ClassMode::Categorical => {
                let mut y = vec![0.0; n * k];
                for (row, &i) in idx.iter().enumerate() {
                    y[row * k + self.labels[i]] = 1.0;
                }
                Tensor::from_vec(&[n, k], y)?
            }
            ClassMode::None => Tensor::from_vec(&[n, 0], Vec::new())?,
            ClassMode::Input => x.clone(),
        };
        Ok((x, y))
    }
}

/// Whether `bytes` start as a JPEG file does (SOI and a marker).
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[..3] == [0xFF, 0xD8, 0xFF]
}

fn check_pixels(path: &Path, w: u64, h: u64, max_pixels: u64) -> Result<u64> {
    let pixels = w.saturating_mul(h);
    if pixels > max_pixels {
        return Err(format_err(
            path,
            format!("image of {w}x{h} pixels is over the limit of {max_pixels} pixels"),
        ));
    }
    Ok(pixels)
}

/// Decodes a JPEG to interleaved RGB with zune-jpeg into `buf` (grown as
/// needed, never shrunk, so a thread reuses one buffer), refusing images
/// over `max_pixels` from the header; returns `(height, width, ycbcr)`,
/// the pixels being `buf[..height * width * 3]`. Truncated or corrupt data
/// is an error (as PIL has it); what libjpeg only warns about (extra bytes
/// before a marker, a stray marker) is decoded leniently.
///
/// With `want_ycbcr`, a YCbCr JPEG (the usual kind) is left in YCbCr
/// (`ycbcr` true: the caller converts the pixels it uses with
/// [`fast::ycbcr_to_rgb`], zune-jpeg's own conversion), and a baseline one
/// is decoded by [`crate::jpeg::decode_full`]; any other kind is decoded
/// to RGB as always.
fn decode_jpeg_into(
    path: &Path,
    bytes: &[u8],
    max_pixels: u64,
    buf: &mut Vec<u8>,
    want_ycbcr: bool,
) -> Result<(usize, usize, bool)> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    if want_ycbcr {
        // Baseline YCbCr JPEGs by this crate's decoder (`crate::jpeg`:
        // faster, within 1 level of zune-jpeg's values); anything it
        // declines goes on to zune-jpeg, which also words the errors.
        let taken = NEAREST_BUFFERS.with(|b| {
            let mut b = b.try_borrow_mut().ok()?;
            crate::jpeg::decode_full(bytes, max_pixels, buf, &mut b.1)
        });
        if let Some((h, w)) = taken {
            return Ok((h, w, true));
        }
    }
    let options = |strict, out| {
        DecoderOptions::default()
            .jpeg_set_out_colorspace(out)
            .set_max_width(usize::from(u16::MAX))
            .set_max_height(usize::from(u16::MAX))
            .set_strict_mode(strict)
    };
    let mut decode = |strict: bool| -> Result<(usize, usize, bool)> {
        let header_err = |e| format_err(path, format!("cannot decode: {e:?}"));
        let out = if want_ycbcr {
            ColorSpace::YCbCr
        } else {
            ColorSpace::RGB
        };
        let mut d =
            zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options(strict, out));
        d.decode_headers().map_err(header_err)?;
        let mut ycbcr = want_ycbcr;
        if want_ycbcr && d.input_colorspace() != Some(ColorSpace::YCbCr) {
            // Grayscale, CMYK, RGB JPEGs: to RGB by the decoder (the
            // options decide its conversion when the headers are read).
            ycbcr = false;
            d = zune_jpeg::JpegDecoder::new_with_options(
                ZCursor::new(bytes),
                options(strict, ColorSpace::RGB),
            );
            d.decode_headers().map_err(header_err)?;
        }
        let (w, h) = d
            .dimensions()
            .ok_or_else(|| format_err(path, "cannot decode: no image size"))?;
        check_pixels(path, w as u64, h as u64, max_pixels)?;
        let size = d
            .output_buffer_size()
            .ok_or_else(|| format_err(path, "cannot decode: image too large"))?;
        if size != w * h * 3 {
            return Err(format_err(path, "cannot decode: unexpected channel count"));
        }
        if buf.len() < size {
            buf.resize(size, 0);
        }
        on_aligned_stack(|| d.decode_into(&mut buf[..size]))
            .map_err(|e| format_err(path, format!("cannot decode: {e:?}")))?;
        Ok((h, w, ycbcr))
    };
    match decode(true) {
        Ok(v) => Ok(v),
        Err(e) => {
            // What libjpeg (and so PIL) only warns about: stray bytes or
            // markers. Anything else (truncated data above all) is an error.
            let m = e.to_string();
            let benign = [
                "Extra bytes",
                "found where not expected",
                "Unexpected marker",
            ];
            if !benign.iter().any(|b| m.contains(b)) {
                return Err(e);
            }
            decode(false).map_err(|_| e)
        }
    }
}

/// Calls `f` from a frame aligned to 64 bytes, so that the stack frames
/// below it (zune-jpeg's: its per-block coefficient buffer is zeroed with
/// 64-byte stores) sit at the same offsets from a cache line whatever
/// calls this. Without it, a change of the callers' frame sizes moved
/// that buffer across cache lines and the zeroing took 14% of an
/// augmented image's time (perf).
#[inline(never)]
fn on_aligned_stack<R>(f: impl FnOnce() -> R) -> R {
    #[repr(C, align(64))]
    struct Line([u8; 64]);
    let line = Line([0; 64]);
    std::hint::black_box(&line);
    f()
}

std::thread_local! {
    /// Each thread's JPEG decoding buffer, reused from image to image.
    static DECODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's buffers for [`nearest_jpeg`]: the picked pixels and
    /// the chroma planes.
    static NEAREST_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Keras's nearest resize of a JPEG to `th` x `tw` RGB values times
/// `scale`, decoding only the pixels it picks ([`crate::jpeg`]); `None`
/// when that path does not take the file (not a JPEG, or a kind or a
/// flaw it leaves to the full decoder), which the caller then decodes in
/// full. The values are those of [`fast::resize_nearest_ycbcr`] after a
/// full decode, up to the inverse DCT's rounding (1 level of Y, Cb, Cr).
fn nearest_jpeg(
    bytes: &[u8],
    max_pixels: u64,
    th: usize,
    tw: usize,
    scale: f32,
    out: &mut [MaybeUninit<f32>],
) -> Option<()> {
    if !is_jpeg(bytes) {
        return None;
    }
    NEAREST_BUFFERS.with(|b| {
        let mut b = b.try_borrow_mut().ok()?;
        let (picked, planes) = &mut *b;
        crate::jpeg::decode_nearest(bytes, th, tw, max_pixels, picked, planes)?;
        fast::resize_nearest_ycbcr(picked, th, tw, th, tw, scale, out);
        Some(())
    })
}

/// Reads and decodes `path` and calls `f(pixels, height, width, ycbcr)`
/// with its pixels in the color mode's interleaved `u8` channels. JPEGs in
/// RGB are decoded into a per-thread buffer (no allocation per image); with
/// `ycbcr_ok`, a YCbCr JPEG's pixels may come as YCbCr instead (`ycbcr`
/// true), for the caller to convert only the pixels it uses.
fn with_pixels<R>(
    path: &Path,
    max_pixels: u64,
    mode: ColorMode,
    ycbcr_ok: bool,
    f: impl FnOnce(&[u8], usize, usize, bool) -> R,
) -> Result<R> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    with_bytes(path, &bytes, max_pixels, mode, ycbcr_ok, f)
}

/// [`with_pixels`] of the file's content `bytes`, already read.
fn with_bytes<R>(
    path: &Path,
    bytes: &[u8],
    max_pixels: u64,
    mode: ColorMode,
    ycbcr_ok: bool,
    f: impl FnOnce(&[u8], usize, usize, bool) -> R,
) -> Result<R> {
    if is_jpeg(bytes) && mode == ColorMode::Rgb {
        return DECODE_BUFFER.with(|buf| {
            let mut buf = buf
                .try_borrow_mut()
                .map_err(|e| format_err(path, e.to_string()))?;
            let (h, w, ycbcr) = decode_jpeg_into(path, bytes, max_pixels, &mut buf, ycbcr_ok)?;
            Ok(f(&buf[..h * w * 3], h, w, ycbcr))
        });
    }
    let img = decode_bytes(path, bytes, max_pixels)?;
    let (h, w, data) = to_channels(img, mode);
    Ok(f(&data, h, w, false))
}

/// Reads and decodes one image file with the content's format (not the
/// extension's), refusing images of more than `max_pixels` pixels before
/// decoding them. Errors name the file.
pub fn decode_image(path: &Path, max_pixels: u64) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    decode_bytes(path, &bytes, max_pixels)
}

fn decode_bytes(path: &Path, bytes: &[u8], max_pixels: u64) -> Result<image::DynamicImage> {
    if bytes.is_empty() {
        return Err(format_err(path, "empty file (0 bytes)"));
    }
    if is_jpeg(bytes) {
        let mut data = Vec::new();
        let (h, w, _) = decode_jpeg_into(path, bytes, max_pixels, &mut data, false)?;
        data.truncate(h * w * 3);
        let img = image::RgbImage::from_raw(w as u32, h as u32, data)
            .ok_or_else(|| format_err(path, "bad image buffer"))?;
        return Ok(image::DynamicImage::ImageRgb8(img));
    }
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format_err(path, e.to_string()))
    };
    let r = reader()?;
    if r.format().is_none() {
        return Err(format_err(
            path,
            "not an image in a known format (png, jpeg, bmp, pnm, tiff)",
        ));
    }
    let (w, h) = r
        .into_dimensions()
        .map_err(|e| format_err(path, format!("cannot decode: {e}")))?;
    let pixels = check_pixels(path, u64::from(w), u64::from(h), max_pixels)?;
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
    r.limits(limits);
    r.decode()
        .map_err(|e| format_err(path, format!("cannot decode: {e}")))
}

/// Converts `img` to the color mode's interleaved `u8` channels.
fn to_channels(img: image::DynamicImage, mode: ColorMode) -> (usize, usize, Vec<u8>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = match mode {
        ColorMode::Rgb => img.into_rgb8().into_raw(),
        ColorMode::Rgba => img.into_rgba8().into_raw(),
        ColorMode::Grayscale => match img {
            image::DynamicImage::ImageLuma8(g) => g.into_raw(),
            img => img
                .into_rgb8()
                .into_raw()
                .chunks_exact(3)
                .map(|p| {
                    let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
                    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
                })
                .collect(),
        },
    };
    (h, w, data)
}

/// Decodes `path`, converts it to the options' color mode, resizes it to the
/// target size and writes it, values 0..255, into `out` (`h * w * c`).
pub fn load_image_into(path: &Path, options: &FlowOptions, out: &mut [f32]) -> Result<()> {
    let (th, tw) = options.target_size;
    let c = options.color_mode.channels();
    if out.len() != th * tw * c {
        return Err(format_err(
            path,
            "output buffer size does not match the target size",
        ));
    }
    let lut = fast::scale_lut(1.0);
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let rgb_nearest =
        options.color_mode == ColorMode::Rgb && options.interpolation == Interpolation::Nearest;
    if rgb_nearest
        && nearest_jpeg(
            &bytes,
            options.max_pixels,
            th,
            tw,
            1.0,
            fast::as_uninit(out),
        )
        .is_some()
    {
        // The same pixels as a rescale-only batch of `flow_from_directory`.
        return Ok(());
    }
    with_bytes(
        path,
        &bytes,
        options.max_pixels,
        options.color_mode,
        false,
        |src, h, w, _| resize_into(src, h, w, options, &lut, fast::as_uninit(out)),
    )?
    .map_err(|e| format_err(path, e))
}

/// Resizes `src` (`h` x `w`, the options' channels) to the target size by
/// the options' interpolation into `out`, each value mapped through `lut`.
fn resize_into(
    src: &[u8],
    h: usize,
    w: usize,
    options: &FlowOptions,
    lut: &[f32; 256],
    out: &mut [MaybeUninit<f32>],
) -> std::result::Result<(), &'static str> {
    let (th, tw) = options.target_size;
    let c = options.color_mode.channels();
    if options.interpolation == Interpolation::Nearest || (h, w) == (th, tw) {
        fast::resize_nearest(src, h, w, c, th, tw, lut, out);
        return Ok(());
    }
    let filter = image::imageops::FilterType::Triangle;
    let data = src.to_vec();
    let resized: Vec<u8> = match c {
        1 => {
            let b =
                image::GrayImage::from_raw(w as u32, h as u32, data).ok_or("bad image buffer")?;
            image::imageops::resize(&b, tw as u32, th as u32, filter).into_raw()
        }
        3 => {
            let b =
                image::RgbImage::from_raw(w as u32, h as u32, data).ok_or("bad image buffer")?;
            image::imageops::resize(&b, tw as u32, th as u32, filter).into_raw()
        }
        _ => {
            let b =
                image::RgbaImage::from_raw(w as u32, h as u32, data).ok_or("bad image buffer")?;
            image::imageops::resize(&b, tw as u32, th as u32, filter).into_raw()
        }
    };
    if resized.len() != out.len() {
        return Err("bad resize");
    }
    out.iter_mut()
        .zip(&resized)
        .for_each(|(o, &v)| *o = MaybeUninit::new(lut[v as usize]));
    Ok(())
}

/// Loads one image as a `(height, width, channels)` tensor, values 0..255,
/// resized to `target_size` when given (Keras's `load_img` +
/// `img_to_array`).
pub fn load_img(
    path: impl AsRef<Path>,
    target_size: Option<(usize, usize)>,
    color_mode: ColorMode,
    interpolation: Interpolation,
) -> Result<Tensor> {
    let path = path.as_ref();
    let (h, w) = match target_size {
        Some(s) => s,
        None => {
            let img = decode_image(path, FlowOptions::default().max_pixels)?;
            let (h, w, data) = to_channels(img, color_mode);
            let c = color_mode.channels();
            return Ok(Tensor::from_vec(
                &[h, w, c],
                data.into_iter().map(f32::from).collect(),
            )?);
        }
    };
    let options = FlowOptions {
        target_size: (h, w),
        color_mode,
        interpolation,
        ..Default::default()
    };
    let c = color_mode.channels();
    let mut out = vec![0.0; h * w * c];
    load_image_into(path, &options, &mut out)?;
    Ok(Tensor::from_vec(&[h, w, c], out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(img: image::DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&img)
            .unwrap();
        out
    }

    /// zune-jpeg's own YCbCr output (what `decode_jpeg_into` gives for
    /// the kinds `crate::jpeg` declines, and within 1 level for the others).
    fn zune_ycbcr(bytes: &[u8]) -> Vec<u8> {
        use zune_jpeg::zune_core::bytestream::ZCursor;
        use zune_jpeg::zune_core::colorspace::ColorSpace;
        use zune_jpeg::zune_core::options::DecoderOptions;
        let o = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
        zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), o)
            .decode()
            .unwrap()
    }

    fn textured(w: u32, h: u32, seed: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            let n = (x * 7919 + y * 104_729 + seed * 31).wrapping_mul(2_654_435_761) >> 24;
            image::Rgb([
                (x * 255 / w) as u8 ^ (n as u8 & 0x3F),
                (y * 255 / h) as u8,
                ((x + y + seed) % 256) as u8 ^ (n as u8 >> 2),
            ])
        })
    }

    /// zune-jpeg's YCbCr output converted pixel by pixel equals its RGB
    /// decoding, for every pixel; `decode_jpeg_into`'s YCbCr (this crate's
    /// decoder for these baseline files) within 3 levels of it; a
    /// grayscale JPEG comes back as RGB.
    #[test]
    fn ycbcr_decoding_converts_to_the_same_rgb() {
        let path = Path::new("test.jpg");
        for (i, (w, h)) in [(37, 23), (500, 375), (16, 16), (1, 9)]
            .into_iter()
            .enumerate()
        {
            let bytes = jpeg(image::DynamicImage::ImageRgb8(textured(w, h, i as u32)));
            let (mut rgb, mut ycc) = (Vec::new(), Vec::new());
            let a = decode_jpeg_into(path, &bytes, u64::MAX, &mut rgb, false).unwrap();
            let b = decode_jpeg_into(path, &bytes, u64::MAX, &mut ycc, true).unwrap();
            assert_eq!(a, (h as usize, w as usize, false));
            assert_eq!(b, (h as usize, w as usize, true));
            let n = (w * h * 3) as usize;
            for (k, p) in ycc[..n].chunks_exact(3).enumerate() {
                let c = fast::ycbcr_to_rgb(p[0], p[1], p[2]);
                for (&a, &b) in c.iter().zip(&rgb[k * 3..k * 3 + 3]) {
                    assert!(a.abs_diff(b) <= 3, "{w}x{h}: pixel {k}: {c:?}");
                }
            }
            let ycc = zune_ycbcr(&bytes);
            let converted: Vec<u8> = ycc[..n]
                .chunks_exact(3)
                .flat_map(|p| fast::ycbcr_to_rgb(p[0], p[1], p[2]))
                .collect();
            assert_eq!(converted, rgb[..n], "{w}x{h}");
            // The nearest resize from YCbCr: the RGB image's.
            let (th, tw) = (15, 11);
            let mut want = vec![0.0; th * tw * 3];
            let mut got = vec![0.0; th * tw * 3];
            let scale = 1.0 / 255.0;
            let (h, w) = (h as usize, w as usize);
            fast::resize_nearest(
                &rgb[..n],
                h,
                w,
                3,
                th,
                tw,
                &fast::scale_lut(scale),
                fast::as_uninit(&mut want),
            );
            fast::resize_nearest_ycbcr(&ycc[..n], h, w, th, tw, scale, fast::as_uninit(&mut got));
            assert_eq!(got, want);
        }
        let gray = image::GrayImage::from_fn(20, 10, |x, y| image::Luma([(x * 12 + y) as u8]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
            .encode(gray.as_raw(), 20, 10, image::ExtendedColorType::L8)
            .unwrap();
        let (mut rgb, mut other) = (Vec::new(), Vec::new());
        let a = decode_jpeg_into(path, &bytes, u64::MAX, &mut rgb, false).unwrap();
        let b = decode_jpeg_into(path, &bytes, u64::MAX, &mut other, true).unwrap();
        assert_eq!(a, (10, 20, false));
        assert_eq!(b, (10, 20, false));
        assert_eq!(rgb[..600], other[..600]);
    }

    /// Rescale-only batches of JPEGs equal `load_img`'s images (both
    /// decode only the pixels the nearest resize picks), rescaled; and the
    /// full decode's (to RGB, then resized) within the inverse DCT's
    /// rounding: 1 level of Y, Cb or Cr, at most 3 of R, G or B.
    #[test]
    fn rescale_only_batches_equal_load_img() {
        let dir = tempfile::tempdir().unwrap();
        for (class, n) in [("a", 3), ("b", 2)] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            for i in 0..n {
                let img = textured(40 + 13 * i, 30 + 7 * i, i + 5);
                let bytes = jpeg(image::DynamicImage::ImageRgb8(img));
                std::fs::write(dir.path().join(class).join(format!("{i}.jpg")), bytes).unwrap();
            }
        }
        let flow = ImageDataGenerator::new()
            .rescale(0.5)
            .flow_from_directory(
                dir.path(),
                FlowOptions {
                    target_size: (17, 19),
                    batch_size: 5,
                    shuffle: false,
                    verbose: false,
                    ..FlowOptions::default()
                },
            )
            .unwrap();
        let (x, _) = flow.batch(0, 0).unwrap();
        let mut want = Vec::new();
        for f in flow.filepaths() {
            let t = load_img(f, Some((17, 19)), ColorMode::Rgb, Interpolation::Nearest).unwrap();
            want.extend(t.values().iter().map(|v| v * 0.5));
        }
        assert_eq!(x.values(), &want[..]);
        let mut full = Vec::new();
        for f in flow.filepaths() {
            let (h, w, rgb) = to_channels(decode_image(f, u64::MAX).unwrap(), ColorMode::Rgb);
            let mut out = vec![0.0; 17 * 19 * 3];
            let lut = fast::scale_lut(0.5);
            fast::resize_nearest(&rgb, h, w, 3, 17, 19, &lut, fast::as_uninit(&mut out));
            full.extend(out);
        }
        let mut differ = 0;
        for (a, b) in x.values().iter().zip(&full) {
            assert!((a - b).abs() <= 1.5, "{a} against {b}");
            differ += usize::from(a != b);
        }
        assert!(
            differ * 10 < full.len(),
            "{differ} of {} values differ",
            full.len()
        );
    }

    /// A folder of libjpeg's files (`tests/fixtures/jpeg`): the kinds the
    /// picking decoder takes (4:4:4, 4:2:2, 4:2:0, restart markers) and
    /// those it leaves to zune-jpeg (progressive, grayscale). Each
    /// rescale-only batch image equals `load_img`'s, and the full decode
    /// resized within the inverse DCT's rounding; the declined kinds are
    /// read, not skipped.
    #[test]
    fn libjpeg_files_in_a_flow() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
        let dir = tempfile::tempdir().unwrap();
        let class = dir.path().join("only");
        std::fs::create_dir_all(&class).unwrap();
        let names = [
            "gray",
            "progressive",
            "s420",
            "s420_rst_rows",
            "s422_rst",
            "s444",
        ];
        for name in names {
            let from = fixtures.join(format!("{name}.jpg"));
            std::fs::copy(from, class.join(format!("{name}.jpg"))).unwrap();
        }
        let (th, tw) = (41, 37);
        let flow = ImageDataGenerator::new()
            .rescale(1.0 / 255.0)
            .flow_from_directory(
                dir.path(),
                FlowOptions {
                    target_size: (th, tw),
                    batch_size: names.len(),
                    shuffle: false,
                    verbose: false,
                    class_mode: ClassMode::None,
                    ..FlowOptions::default()
                },
            )
            .unwrap();
        let (x, _) = flow.batch(0, 0).unwrap();
        assert_eq!(x.shape(), &[names.len(), th, tw, 3]);
        assert_eq!(flow.skipped(), 0);
        for (k, f) in flow.filepaths().iter().enumerate() {
            let got = &x.values()[k * th * tw * 3..(k + 1) * th * tw * 3];
            let t = load_img(f, Some((th, tw)), ColorMode::Rgb, Interpolation::Nearest).unwrap();
            let lut = fast::scale_lut(1.0 / 255.0);
            let want: Vec<f32> = t.values().iter().map(|&v| lut[v as usize]).collect();
            assert!(got == &want[..], "{}", f.display());
            let (h, w, rgb) = to_channels(decode_image(f, u64::MAX).unwrap(), ColorMode::Rgb);
            let mut full = vec![0.0; th * tw * 3];
            fast::resize_nearest(&rgb, h, w, 3, th, tw, &lut, fast::as_uninit(&mut full));
            for (a, b) in got.iter().zip(&full) {
                assert!(
                    (a - b).abs() <= 3.0 / 255.0 + 1e-6,
                    "{}: {a} against {b}",
                    f.display()
                );
            }
        }
    }

    /// Photo-like: smooth colour gradients, a saturated disc (its edge
    /// rings past 0..255 in the JPEG: the clamps), grain.
    fn photo(w: u32, h: u32, seed: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            let n = ((x * 7919 + y * 104_729 + seed * 31).wrapping_mul(2_654_435_761) >> 27) as u8;
            let (dx, dy) = (x as i64 - i64::from(w / 3), y as i64 - i64::from(h / 2));
            if dx * dx + dy * dy < i64::from(w * h / 12) {
                image::Rgb([255, n / 4, 0])
            } else {
                image::Rgb([
                    (60 + x * 120 / w) as u8 + n,
                    (200 - y * 150 / h) as u8,
                    ((x + y + seed) % 200) as u8 + 30,
                ])
            }
        })
    }

    /// Mean and largest absolute difference.
    fn diff_stats(a: &[f32], b: &[f32]) -> (f64, f32) {
        assert_eq!(a.len(), b.len());
        let d = a.iter().zip(b).map(|(p, q)| (p - q).abs());
        let sum: f64 = d.clone().map(f64::from).sum();
        (sum / a.len() as f64, d.fold(0.0, f32::max))
    }

    /// The augmentation's fused pass from a JPEG left in YCbCr (output
    /// pixels converted) against the same pass from zune-jpeg's RGB
    /// decoding: real JPEGs, every fill mode, flips, rotations, shrinking
    /// and enlarging. Mean absolute difference under 0.1 level, at most 6
    /// levels (where a source pixel's RGB value was clamped).
    #[test]
    fn augment_from_ycbcr_is_close_to_rgb() {
        use crate::augment::{FillMode, TransformParams};
        let path = Path::new("test.jpg");
        let images = [
            textured(500, 375, 1),
            photo(311, 457, 2),
            photo(64, 48, 3),
            textured(23, 31, 4),
        ];
        let (mut sum, mut n, mut worst) = (0.0, 0usize, 0.0f32);
        for (i, img) in images.into_iter().enumerate() {
            let bytes = jpeg(image::DynamicImage::ImageRgb8(img));
            let (mut rgb, mut ycc) = (Vec::new(), Vec::new());
            let (h, w, _) = decode_jpeg_into(path, &bytes, u64::MAX, &mut rgb, false).unwrap();
            ycc.extend(zune_ycbcr(&bytes));
            let (rgb, ycc) = (&rgb[..h * w * 3], &ycc[..h * w * 3]);
            for (j, mode) in [
                FillMode::Nearest,
                FillMode::Constant,
                FillMode::Reflect,
                FillMode::Wrap,
            ]
            .into_iter()
            .enumerate()
            {
                for (th, tw) in [(150, 150), (37, 29)] {
                    let f = |k: usize| ((i * 31 + j * 7 + k * 13) % 17) as f64 / 16.0 - 0.5;
                    let params = TransformParams {
                        theta: 30.0 * f(1),
                        tx: 0.3 * th as f64 * f(2),
                        ty: 0.3 * tw as f64 * f(3),
                        shear: 20.0 * f(4),
                        zx: 1.0 + 0.4 * f(5),
                        zy: 1.0 + 0.4 * f(6),
                        flip_horizontal: j % 2 == 0,
                        flip_vertical: j == 1,
                        ..TransformParams::default()
                    };
                    let a = fast::compose_resize(&params.matrix(th, tw).unwrap(), h, w, th, tw);
                    let mut want = vec![0.0; th * tw * 3];
                    let mut got = vec![0.0; th * tw * 3];
                    let run = |src: &[u8], ycbcr: bool, out: &mut [f32]| {
                        let out = fast::as_uninit(out);
                        if ycbcr {
                            fast::affine_resample_ycbcr(src, h, w, &a, mode, 40.0, 1.0, th, tw, out)
                        } else {
                            fast::affine_resample(src, h, w, 3, &a, mode, 40.0, 1.0, th, tw, out)
                        }
                    };
                    run(rgb, false, &mut want).unwrap();
                    run(ycc, true, &mut got).unwrap();
                    let (mean, max) = diff_stats(&got, &want);
                    sum += mean * want.len() as f64;
                    n += want.len();
                    worst = worst.max(max);
                    assert!(mean < 0.3, "{w}x{h} {mode:?} {th}x{tw}: mean {mean}");
                }
            }
        }
        let mean = sum / n as f64;
        assert!(mean < 0.25, "mean difference {mean}");
        assert!(worst <= 24.0, "max difference {worst}");
    }

    /// Augmented batches of JPEGs (decoded in YCbCr) against the same
    /// batches of PNGs holding zune-jpeg's RGB decoding of those JPEGs (the
    /// RGB path, the same draws): every augmentation path (fused pass with
    /// each fill mode, flips alone with the nearest and the bilinear resize
    /// when no matrix is drawn, brightness, channel shift) within the
    /// bounds of `augment_from_ycbcr_is_close_to_rgb`, and the images that
    /// are only resized (no matrix drawn) equal.
    #[test]
    fn augmented_jpeg_batches_match_rgb_batches() {
        use crate::augment::FillMode;
        let dir = tempfile::tempdir().unwrap();
        let (jpg, png) = (dir.path().join("jpg"), dir.path().join("png"));
        for (class, n) in [("a", 4), ("b", 3)] {
            std::fs::create_dir_all(jpg.join(class)).unwrap();
            std::fs::create_dir_all(png.join(class)).unwrap();
            for i in 0..n {
                let img = if i % 2 == 0 {
                    photo(60 + 17 * i, 45 + 9 * i, i)
                } else {
                    textured(50 + 13 * i, 40 + 7 * i, i + 5)
                };
                let bytes = jpeg(image::DynamicImage::ImageRgb8(img));
                let name = format!("{i}");
                std::fs::write(jpg.join(class).join(format!("{name}.jpg")), &bytes).unwrap();
                let mut rgb = Vec::new();
                let (h, w, _) =
                    decode_jpeg_into(Path::new("x"), &bytes, u64::MAX, &mut rgb, false).unwrap();
                rgb.truncate(h * w * 3);
                image::RgbImage::from_raw(w as u32, h as u32, rgb)
                    .unwrap()
                    .save(png.join(class).join(format!("{name}.png")))
                    .unwrap();
            }
        }
        let geometric = || {
            ImageDataGenerator::new()
                .rescale(1.0 / 255.0)
                .rotation_range(20.0)
                .width_shift_range(0.2)
                .height_shift_range(0.2)
                .shear_range(10.0)
                .zoom_range(0.3)
                .horizontal_flip(true)
        };
        let generators = [
            (geometric(), Interpolation::Nearest),
            (
                geometric().fill_mode(FillMode::Constant).cval(40.0),
                Interpolation::Nearest,
            ),
            (
                geometric().fill_mode(FillMode::Reflect),
                Interpolation::Nearest,
            ),
            (
                geometric()
                    .fill_mode(FillMode::Wrap)
                    .brightness_range(0.5, 1.5)
                    .channel_shift_range(30.0),
                Interpolation::Nearest,
            ),
            (
                ImageDataGenerator::new().horizontal_flip(true),
                Interpolation::Nearest,
            ),
            (
                ImageDataGenerator::new()
                    .horizontal_flip(true)
                    .vertical_flip(true)
                    .rescale(0.5),
                Interpolation::Bilinear,
            ),
        ];
        for (k, (generator, interpolation)) in generators.into_iter().enumerate() {
            let batch = |folder: &Path| {
                let flow = generator
                    .clone()
                    .flow_from_directory(
                        folder,
                        FlowOptions {
                            target_size: (33, 41),
                            batch_size: 7,
                            shuffle: false,
                            seed: Some(k as u64),
                            verbose: false,
                            interpolation,
                            ..FlowOptions::default()
                        },
                    )
                    .unwrap();
                let (x, _) = flow.batch(0, 0).unwrap();
                x.values().to_vec()
            };
            let (got, want) = (batch(&jpg), batch(&png));
            // In levels (before the rescale, brightness and shift).
            let unit = generator.rescale.unwrap_or(1.0);
            let (mean, max) = diff_stats(&got, &want);
            let (mean, max) = (mean / f64::from(unit), max / unit);
            let brightness = if k == 3 { 1.5 } else { 1.0 };
            assert!(mean < 0.3 * brightness, "generator {k}: mean {mean}");
            assert!(max <= 24.0 * brightness as f32, "generator {k}: max {max}");
            if k >= 4 {
                // Flips only: the images without a flip drawn are resized
                // (no matrix), converting the pixels of this crate's
                // decoding: zune-jpeg's RGB within 3 levels.
                let size = 33 * 41 * 3;
                let same = got
                    .chunks(size)
                    .zip(want.chunks(size))
                    .filter(|(g, w)| g.iter().zip(*w).all(|(a, b)| (a - b).abs() <= 3.0 * unit))
                    .count();
                assert!(same >= 1, "generator {k}: no image resized alone");
            }
        }
    }

    /// The measurement behind `fast::affine_resample_ycbcr`'s note, on a
    /// folder of JPEGs (`CONVNET_YCC_DIR`; with `CONVNET_PIL_DIR`, PIL's
    /// decoding of each file `NAME` as raw RGB bytes in `NAME.rgb` there):
    /// the fused pass from YCbCr against the one from zune-jpeg's RGB, and
    /// the one from zune-jpeg's RGB against the one from PIL's (Keras's
    /// decoder). `cargo test --release -p convnet-data --lib
    /// ycbcr_difference_on_folder -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn ycbcr_difference_on_folder() {
        use crate::augment::FillMode;
        let Ok(dir) = std::env::var("CONVNET_YCC_DIR") else {
            return;
        };
        let pil = std::env::var("CONVNET_PIL_DIR").ok();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        let generator = ImageDataGenerator::new()
            .width_shift_range(0.2)
            .height_shift_range(0.2)
            .shear_range(0.2)
            .zoom_range(0.2);
        let (th, tw) = (150, 150);
        let mut rng = Rng::new(7);
        let (mut ycc_sum, mut ycc_max, mut pil_sum, mut pil_max, mut n, mut np) =
            (0.0, 0.0f32, 0.0, 0.0f32, 0usize, 0usize);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            let (mut rgb, mut ycc) = (Vec::new(), Vec::new());
            let (h, w, _) = decode_jpeg_into(f, &bytes, u64::MAX, &mut rgb, false).unwrap();
            let (_, _, ycbcr) = decode_jpeg_into(f, &bytes, u64::MAX, &mut ycc, true).unwrap();
            assert!(ycbcr);
            let Some(m) = generator
                .get_random_transform(th, tw, &mut rng)
                .matrix(th, tw)
            else {
                continue;
            };
            let a = fast::compose_resize(&m, h, w, th, tw);
            let mode = FillMode::Nearest;
            let run = |src: &[u8], ycbcr: bool| {
                let mut out = vec![0.0; th * tw * 3];
                let o = fast::as_uninit(&mut out);
                if ycbcr {
                    fast::affine_resample_ycbcr(src, h, w, &a, mode, 0.0, 1.0, th, tw, o)
                } else {
                    fast::affine_resample(src, h, w, 3, &a, mode, 0.0, 1.0, th, tw, o)
                }
                .unwrap();
                out
            };
            let want = run(&rgb[..h * w * 3], false);
            let (mean, max) = diff_stats(&run(&ycc[..h * w * 3], true), &want);
            ycc_sum += mean;
            ycc_max = ycc_max.max(max);
            n += 1;
            let name = f.file_name().unwrap().to_string_lossy();
            if let Some(Ok(p)) = pil
                .as_ref()
                .map(|d| std::fs::read(Path::new(d).join(format!("{name}.rgb"))))
            {
                let (mean, max) = diff_stats(&run(&p, false), &want);
                pil_sum += mean;
                pil_max = pil_max.max(max);
                np += 1;
            }
        }
        eprintln!(
            "{n} images: YCbCr against RGB mean {:.4} max {ycc_max}; {np} images: PIL against zune mean {:.4} max {pil_max}",
            ycc_sum / n as f64,
            pil_sum / np.max(1) as f64
        );
    }
}
