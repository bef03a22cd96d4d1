//! Code shared by the mission's example programs (`basic_cnn` so far) and
//! by the examples'
//! end-to-end test (`tests/examples.rs`), which includes this file with
//! `#[path = "../examples/common/mod.rs"] mod common;`. Cargo does not build
//! `examples/common/` as an example of its own.
//!
//! What lives here: the command-line flags every program shares, the basic
//! Cats-vs-Dogs CNN, the image-folder pipeline, a training run that Ctrl-C
//! stops cleanly, and the files a run leaves behind (`accuracy.png`,
//! `loss.png`, `history.csv`, `weights.safetensors`, `report.md`).

// Each example uses only part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use convnet::data::{ClassMode, DirectoryIterator, FlowOptions, ImageDataGenerator};
use convnet::nn::callbacks::{Callback, Control};
use convnet::nn::layers::*;
use convnet::nn::optimizers::Adam;
use convnet::nn::Activation::{Relu, Sigmoid};
use convnet::nn::{
    clear_session, set_random_seed, FitOptions, History, Logs, Loss, Metric, Model, Sequential,
};
use convnet::tensor::{safetensors, Tensor};

/// Errors of the examples: any error, shown with its message.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// What the Keras programs of the mission use, for the `--help` texts and
/// the reports.
pub const KERAS_EPOCHS: usize = 15;

/// The bundled sample, relative to the repository root.
pub const SAMPLE_DIR: &str = "data/sample";

/// The flags every training example takes. Defaults are the mission's Keras
/// programs' (`steps_per_epoch=100`, `validation_steps=50`, 150x150 inputs,
/// batch 32), except `--epochs`, whose default each example picks so that a
/// run on the bundled sample takes a few minutes on two cores.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct CommonArgs {
    /// Folder with `train/` and `validation/`, one subfolder of images per
    /// class (the Kaggle Cats-vs-Dogs layout). The default is the bundled
    /// sandals-vs-sneakers sample; `cargo xtask fetch-data` puts the real
    /// Cats-vs-Dogs set in data/cats_and_dogs_filtered.
    #[arg(long, value_name = "DIR", default_value = SAMPLE_DIR)]
    pub data: PathBuf,

    /// Training epochs (the Keras program runs 15).
    #[arg(long, value_name = "N", default_value_t = KERAS_EPOCHS)]
    pub epochs: usize,

    /// Training batches per epoch, as Keras's `steps_per_epoch`. With more
    /// batches than one pass over the images, the epoch goes on into the
    /// next pass (in a new order), as Keras 2 does with a generator.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub steps_per_epoch: usize,

    /// Validation batches after each epoch, as Keras's `validation_steps`.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub validation_steps: usize,

    /// Images per batch.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch_size: usize,

    /// Seed of the initial weights, the shuffling, the augmentation and the
    /// dropout masks: the same seed gives the same run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Where to write the plots, history, weights and report (created if
    /// needed). Default: runs/<example>-<UTC date>-<time>/.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Also print the running loss and accuracy every 10 training steps
    /// (the default prints one line per epoch, as Keras's verbose=2).
    #[arg(long, short)]
    pub verbose: bool,

    /// Size every image is resized to, HxW or one number for a square
    /// (the mission's programs use 150x150).
    #[arg(long, value_name = "HxW", default_value = "150", value_parser = parse_size)]
    pub target_size: (usize, usize),
}

impl CommonArgs {
    /// The mission's settings with a given number of epochs, for code (the
    /// test) that builds the flags without a command line.
    pub fn with_epochs(epochs: usize) -> Self {
        CommonArgs {
            data: PathBuf::from(SAMPLE_DIR),
            epochs,
            steps_per_epoch: 100,
            validation_steps: 50,
            batch_size: 32,
            seed: 1,
            out: None,
            verbose: false,
            target_size: (150, 150),
        }
    }

    /// Refuse settings that cannot run, with a message naming the flag.
    pub fn check(&self) -> Result<(), BoxError> {
        for (flag, v) in [
            ("--epochs", self.epochs),
            ("--steps-per-epoch", self.steps_per_epoch),
            ("--validation-steps", self.validation_steps),
            ("--batch-size", self.batch_size),
        ] {
            if v == 0 {
                return Err(format!("{flag} must be at least 1").into());
            }
        }
        Ok(())
    }
}

/// `150` or `150x120` (height x width) as `(height, width)`.
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("\"{s}\" is not a size: give HxW (e.g. 150x150) or one number");
    let parse = |t: &str| -> Result<usize, String> {
        match t.trim().parse::<usize>() {
            Ok(0) => Err(format!("\"{s}\": sizes must be at least 1")),
            Ok(v) => Ok(v),
            Err(_) => Err(bad()),
        }
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => {
            let v = parse(s)?;
            Ok((v, v))
        }
    }
}

/// Parse the command line into `T`, with `--epochs` defaulting to
/// `default_epochs` (each example picks its own), and clap's own handling
/// of `--help` and of bad flags (a message and exit status 2).
pub fn parse_args<T: Parser>(default_epochs: usize) -> T {
    // clap keeps default values as `&'static str`: leak the one string.
    let default: &'static str = Box::leak(default_epochs.to_string().into_boxed_str());
    let command = T::command().mut_arg("epochs", |a| {
        a.default_value(default).help(format!(
            "Training epochs (the Keras program runs {KERAS_EPOCHS}; {default_epochs} here so \
             that a run on the bundled sample takes a few minutes on two cores)"
        ))
    });
    let matches = command.get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Run `body`; on error print `{example}: error: {message}` (with the
/// chain of causes) and exit with status 1.
pub fn main_with(example: &str, body: impl FnOnce() -> Result<(), BoxError>) {
    if let Err(e) = body() {
        eprintln!("{example}: error: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}

/// The program's command line as typed (program name without its folder),
/// for the reports.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_default();
    std::iter::once(program)
        .chain(args.map(|a| {
            if a.contains([' ', '"', '\'']) {
                format!("{a:?}")
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The out folder: `--out` if given, else a new `runs/<example>-<stamp>/`
/// (with `-2`, `-3`... when two runs start in the same second). Created.
pub fn out_dir(example: &str, out: Option<&Path>) -> Result<PathBuf, BoxError> {
    let dir = match out {
        Some(d) => d.to_path_buf(),
        None => {
            let base = format!("runs/{example}-{}", utc_stamp(SystemTime::now()));
            let mut dir = PathBuf::from(&base);
            let mut n = 2;
            while dir.exists() {
                dir = PathBuf::from(format!("{base}-{n}"));
                n += 1;
            }
            dir
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("{}: cannot create the out folder: {e}", dir.display()))?;
    Ok(dir)
}

/// The data folder, checked: it must hold `train/` and `validation/`. The
/// default relative `data/sample` is also looked for in the repository the
/// example was built from, so the examples run from any folder.
pub fn resolve_data(data: &Path) -> Result<PathBuf, BoxError> {
    let mut dir = data.to_path_buf();
    if !dir.exists() && data == Path::new(SAMPLE_DIR) {
        let in_repo = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE_DIR);
        if in_repo.exists() {
            dir = in_repo;
        }
    }
    if !dir.is_dir() {
        return Err(format!(
            "{}: no such folder (--data wants a folder with train/ and validation/, one \
             subfolder per class; `cargo xtask fetch-data` downloads Cats-vs-Dogs into \
             data/cats_and_dogs_filtered)",
            dir.display()
        )
        .into());
    }
    for sub in ["train", "validation"] {
        if !dir.join(sub).is_dir() {
            return Err(format!(
                "{}: no {sub}/ folder in it (--data wants the Kaggle layout: \
                 DIR/train/<class>/*.jpg and DIR/validation/<class>/*.jpg)",
                dir.display()
            )
            .into());
        }
    }
    Ok(dir)
}

/// The mission's basic CNN for `target` (height, width) RGB images:
/// Conv2D(32) MaxPool Conv2D(64) MaxPool Conv2D(128) MaxPool Flatten
/// Dense(128, relu) Dense(512, relu) Dense(1, sigmoid); adam, binary
/// cross-entropy, accuracy. Layer names as Keras gives them in a fresh
/// session (`conv2d`, `conv2d_1`, `conv2d_2`, `dense`, ...), weights drawn
/// from `seed`.
pub fn basic_cnn_model(target: (usize, usize), seed: u64) -> Result<Model, BoxError> {
    clear_session();
    set_random_seed(seed);
    let mut model = Sequential::new(&[target.0, target.1, 3]);
    model.add(Conv2D::new(32, (3, 3)).activation(Relu))?;
    model.add(MaxPooling2D::new((2, 2)))?;
    model.add(Conv2D::new(64, (3, 3)).activation(Relu))?;
    model.add(MaxPooling2D::new((2, 2)))?;
    model.add(Conv2D::new(128, (3, 3)).activation(Relu))?;
    model.add(MaxPooling2D::new((2, 2)))?;
    model.add(Flatten::new())?;
    model.add(Dense::new(128).activation(Relu))?;
    model.add(Dense::new(512).activation(Relu))?;
    model.add(Dense::new(1).activation(Sigmoid))?;
    model.compile(
        Adam::default(),
        Loss::BinaryCrossentropy,
        &[Metric::Accuracy],
    )?;
    Ok(model)
}

/// The mission's training augmentation: rescale 1/255, width and height
/// shifts 0.2, shear 0.2, zoom 0.2; `rotation` degrees and horizontal flips
/// on request.
pub fn mission_augmentation(rotation: f32, horizontal_flip: bool) -> ImageDataGenerator {
    ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .rotation_range(rotation)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(0.2)
        .zoom_range(0.2)
        .horizontal_flip(horizontal_flip)
}

/// The training and validation batches: `train_gen` over `data/train`, a
/// rescale-only generator over `data/validation`, binary labels, the
/// target size and batch size of `args`. Both must have exactly two
/// classes, the same ones.
pub fn flows(
    data: &Path,
    train_gen: &ImageDataGenerator,
    args: &CommonArgs,
) -> Result<(DirectoryIterator, DirectoryIterator), BoxError> {
    let options = |seed: u64| FlowOptions {
        target_size: args.target_size,
        batch_size: args.batch_size,
        class_mode: ClassMode::Binary,
        seed: Some(seed),
        ..Default::default()
    };
    let train = train_gen.flow_from_directory(data.join("train"), options(args.seed))?;
    let validation = ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .flow_from_directory(data.join("validation"), options(args.seed ^ 0x7a11))?;
    if train.class_names() != validation.class_names() {
        return Err(format!(
            "{}: the classes of train/ ({}) and validation/ ({}) differ",
            data.display(),
            train.class_names().join(", "),
            validation.class_names().join(", ")
        )
        .into());
    }
    Ok((train, validation))
}

/// Ctrl-C handling for a training run. The first Ctrl-C lets the epoch
/// under way finish (with its validation) and stops; the second stops after
/// the current step (the unfinished epoch is left out of the history); the
/// third ends the program at once. Either way of stopping still writes the
/// history, the plots and the weights.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    presses: Arc<AtomicUsize>,
}

impl Interrupt {
    /// A flag nobody sets (the tests), until [`Interrupt::install`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Install the Ctrl-C handler (once per process).
    pub fn install(&self) -> Result<(), BoxError> {
        let presses = self.presses.clone();
        ctrlc::set_handler(move || match presses.fetch_add(1, Ordering::SeqCst) {
            0 => eprintln!(
                "\nCtrl-C: stopping at the end of this epoch (press Ctrl-C again to stop after \
                 this step)"
            ),
            1 => eprintln!("\nCtrl-C: stopping after this step (press again to quit at once)"),
            _ => {
                eprintln!("\nCtrl-C: quitting; nothing more is written");
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
        Ok(())
    }

    /// Ask to stop, as one Ctrl-C does.
    pub fn request(&self) {
        self.presses.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether Ctrl-C was pressed.
    pub fn requested(&self) -> bool {
        self.presses.load(Ordering::SeqCst) > 0
    }
}

impl Callback for Interrupt {
    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _step: usize,
        _loss: f32,
        _logs: &Logs,
    ) -> convnet::nn::Result<Control> {
        Ok(if self.presses.load(Ordering::SeqCst) >= 2 {
            Control::Stop
        } else {
            Control::Continue
        })
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _model: &Model,
    ) -> convnet::nn::Result<Control> {
        Ok(if self.requested() {
            Control::Stop
        } else {
            Control::Continue
        })
    }
}

/// With `--verbose`: a line with the running figures every `every` steps.
struct StepPrinter {
    every: usize,
    steps: usize,
}

impl Callback for StepPrinter {
    fn on_batch_end(
        &mut self,
        epoch: usize,
        step: usize,
        _loss: f32,
        logs: &Logs,
    ) -> convnet::nn::Result<Control> {
        if step % self.every == 0 || step == self.steps {
            let figures: Vec<String> = logs.iter().map(|(k, v)| format!("{k}: {v:.4}")).collect();
            println!(
                "  epoch {epoch} step {step}/{} - {}",
                self.steps,
                figures.join(" - ")
            );
            let _ = std::io::stdout().flush();
        }
        Ok(Control::Continue)
    }
}

/// Seconds spent in each epoch (training and validation).
#[derive(Default)]
struct EpochTimer {
    started: Option<Instant>,
    seconds: Vec<f64>,
}

impl Callback for EpochTimer {
    fn on_train_begin(&mut self, _model: &Model) -> convnet::nn::Result<()> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _model: &Model,
    ) -> convnet::nn::Result<Control> {
        if let Some(t) = self.started.replace(Instant::now()) {
            self.seconds.push(t.elapsed().as_secs_f64());
        }
        Ok(Control::Continue)
    }
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Per-epoch figures, as Keras's `History`.
    pub history: History,
    /// Whether Ctrl-C stopped the run before its last epoch.
    pub interrupted: bool,
    /// Wall-clock seconds of `fit`.
    pub seconds: f64,
    /// Seconds of each finished epoch (training and validation).
    pub epoch_seconds: Vec<f64>,
}

/// `model.fit(train, validation_data=validation, epochs, steps_per_epoch,
/// validation_steps)` with Ctrl-C handling: one line per epoch, a line
/// every 10 steps with `--verbose`.
pub fn fit(
    model: &mut Model,
    train: &mut DirectoryIterator,
    validation: &mut DirectoryIterator,
    args: &CommonArgs,
    interrupt: &Interrupt,
) -> Result<Trained, BoxError> {
    let options = FitOptions {
        epochs: args.epochs,
        steps_per_epoch: Some(args.steps_per_epoch),
        validation_steps: Some(args.validation_steps),
        verbose: 2,
        seed: args.seed,
        ..Default::default()
    };
    let mut stopper = interrupt.clone();
    let mut timer = EpochTimer::default();
    let mut printer = StepPrinter {
        every: 10,
        steps: args.steps_per_epoch,
    };
    let started = Instant::now();
    let history = {
        let mut callbacks: Vec<&mut dyn Callback> = vec![&mut stopper, &mut timer];
        if args.verbose {
            callbacks.push(&mut printer);
        }
        model.fit_with_callbacks(train, Some(validation), &options, &mut callbacks)?
    };
    Ok(Trained {
        interrupted: interrupt.requested() && history.epoch.len() < args.epochs,
        history,
        seconds: started.elapsed().as_secs_f64(),
        epoch_seconds: timer.seconds,
    })
}

/// Save the model's weights as safetensors, with metadata saying which
/// example made them and its input shape (the `filters` example reads it).
pub fn save_weights(model: &Model, example: &str, path: &Path) -> Result<(), BoxError> {
    let weights = model.get_weights();
    let refs: Vec<(&str, &Tensor)> = weights.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let shape = model.input_shape();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "convnet".to_string());
    meta.insert("model".to_string(), model.name().to_string());
    meta.insert("example".to_string(), example.to_string());
    meta.insert(
        "input_shape".to_string(),
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    safetensors::save(path, &refs, &meta)?;
    Ok(())
}

/// Everything a report says besides the figures.
pub struct ReportInfo<'a> {
    /// The example's name (`basic_cnn`).
    pub example: &'a str,
    /// One line saying what was trained.
    pub title: &'a str,
    /// The command line.
    pub command: String,
    /// The data folder used.
    pub data: &'a Path,
    /// The flags.
    pub args: &'a CommonArgs,
    /// `(class name, label)` pairs.
    pub classes: Vec<(String, usize)>,
    /// Training and validation image counts.
    pub images: (usize, usize),
    /// Extra lines (augmentation, weights used...), one bullet each.
    pub notes: Vec<String>,
}

/// The files a run writes into its out folder.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The out folder.
    pub dir: PathBuf,
    /// `accuracy.png`: training vs validation accuracy per epoch.
    pub accuracy_png: PathBuf,
    /// `loss.png`: training vs validation loss per epoch.
    pub loss_png: PathBuf,
    /// `history.csv`: one row per epoch.
    pub history_csv: PathBuf,
    /// `weights.safetensors`: the trained weights.
    pub weights: PathBuf,
    /// `report.md`: settings, summary, figures.
    pub report: PathBuf,
}

impl RunFiles {
    /// The file names in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        RunFiles {
            dir: dir.to_path_buf(),
            accuracy_png: dir.join("accuracy.png"),
            loss_png: dir.join("loss.png"),
            history_csv: dir.join("history.csv"),
            weights: dir.join("weights.safetensors"),
            report: dir.join("report.md"),
        }
    }
}

fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{}m{:02.0}s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// The `report.md` text.
pub fn report_text(model: &Model, trained: &Trained, info: &ReportInfo) -> String {
    let a = info.args;
    let mut r = String::new();
    let _ = writeln!(r, "# {}: {}\n", info.example, info.title);
    let _ = writeln!(r, "Command: `{}`\n", info.command);
    let _ = writeln!(r, "## Settings\n");
    let classes: Vec<String> = info
        .classes
        .iter()
        .map(|(c, i)| format!("{c} = {i}"))
        .collect();
    let _ = writeln!(
        r,
        "- data: `{}`: {} training and {} validation images, classes {}",
        info.data.display(),
        info.images.0,
        info.images.1,
        classes.join(", ")
    );
    let _ = writeln!(
        r,
        "- epochs {}, steps_per_epoch {}, validation_steps {}, batch size {}, target size {}x{}, \
         seed {}",
        a.epochs,
        a.steps_per_epoch,
        a.validation_steps,
        a.batch_size,
        a.target_size.0,
        a.target_size.1,
        a.seed
    );
    for n in &info.notes {
        let _ = writeln!(r, "- {n}");
    }
    let done = trained.history.epoch.len();
    let _ = writeln!(r, "\n## Result\n");
    if trained.interrupted {
        let _ = writeln!(
            r,
            "Stopped by Ctrl-C after {done} of {} epochs.\n",
            a.epochs
        );
    }
    let images = done * a.steps_per_epoch * a.batch_size;
    let train_secs: f64 = trained.epoch_seconds.iter().sum();
    let _ = writeln!(
        r,
        "{done} epochs in {} ({} per epoch with validation; {:.1} training images/s counting \
         validation time).\n",
        fmt_secs(trained.seconds),
        fmt_secs(train_secs / done.max(1) as f64),
        images as f64 / train_secs.max(1e-9)
    );
    let names: Vec<&String> = trained.history.history.keys().collect();
    if done > 0 {
        let _ = write!(r, "| epoch |");
        for n in &names {
            let _ = write!(r, " {n} |");
        }
        let _ = write!(r, "\n|---|");
        for _ in &names {
            let _ = write!(r, "---|");
        }
        r.push('\n');
        for (i, e) in trained.history.epoch.iter().enumerate() {
            let _ = write!(r, "| {} |", e + 1);
            for n in &names {
                match trained.history.history[*n].get(i) {
                    Some(v) => {
                        let _ = write!(r, " {v:.4} |");
                    }
                    None => r.push_str(" |"),
                }
            }
            r.push('\n');
        }
        if let Some(best) = trained.history.get("val_accuracy").and_then(|v| {
            v.iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map(|(i, v)| (i + 1, *v))
        }) {
            let _ = writeln!(
                r,
                "\nBest validation accuracy: {:.4} (epoch {}).",
                best.1, best.0
            );
        }
    } else {
        let _ = writeln!(r, "No epoch finished: the history is empty.");
    }
    let _ = writeln!(
        r,
        "\n## Files\n\n- `accuracy.png`, `loss.png`: training vs validation per epoch\n\
         - `history.csv`: the figures per epoch\n- `weights.safetensors`: the weights at the end"
    );
    let _ = writeln!(r, "\n## Model\n\n```text\n{}```", model.summary_string());
    r
}

/// Write the run's files into `dir`: the two plots, the history, the
/// weights and the report.
pub fn write_run(
    dir: &Path,
    model: &Model,
    trained: &Trained,
    info: &ReportInfo,
) -> Result<RunFiles, BoxError> {
    let files = RunFiles::in_dir(dir);
    let h = &trained.history;
    h.plot_metric(
        "accuracy",
        "Training and validation accuracy",
        &files.accuracy_png,
    )?;
    h.plot_metric("loss", "Training and validation loss", &files.loss_png)?;
    std::fs::write(&files.history_csv, h.to_csv())
        .map_err(|e| format!("{}: {e}", files.history_csv.display()))?;
    save_weights(model, info.example, &files.weights)?;
    std::fs::write(&files.report, report_text(model, trained, info))
        .map_err(|e| format!("{}: {e}", files.report.display()))?;
    Ok(files)
}

/// Print where the files are, and the last epoch's figures.
pub fn print_files(files: &RunFiles, trained: &Trained) {
    print_files_with(files, trained, &[]);
}

/// [`print_files`] with more files of the run: `(path, what it is)`.
pub fn print_files_with(files: &RunFiles, trained: &Trained, extra: &[(&Path, &str)]) {
    println!("\nWrote {}/", files.dir.display());
    let mut files_list: Vec<(&Path, &str)> = vec![
        (&files.accuracy_png, "training and validation accuracy"),
        (&files.loss_png, "training and validation loss"),
        (&files.history_csv, "the figures per epoch"),
        (&files.weights, "the trained weights"),
        (&files.report, "settings, summary and figures"),
    ];
    files_list.extend_from_slice(extra);
    let width = files_list
        .iter()
        .map(|(p, _)| p.display().to_string().len())
        .max()
        .unwrap_or(0);
    for (p, what) in files_list {
        println!("  {:<width$} {what}", p.display().to_string());
    }
    let last: Vec<String> = trained
        .history
        .history
        .iter()
        .filter_map(|(k, v)| v.last().map(|x| format!("{k} {x:.4}")))
        .collect();
    if !last.is_empty() {
        println!("Last epoch: {}", last.join(", "));
    }
}

/// The class names and labels of a flow, as `(name, label)`.
pub fn class_list(flow: &DirectoryIterator) -> Vec<(String, usize)> {
    flow.class_indices().into_iter().collect()
}

/// A whole run of a CNN example: the data, `model` (built and compiled),
/// training with `train_gen` feeding it, and the files in `out`.
/// Returns the files and what training did.
#[allow(clippy::too_many_arguments)]
pub fn train_and_write(
    example: &str,
    title: &str,
    args: &CommonArgs,
    model: &mut Model,
    train_gen: &ImageDataGenerator,
    out: &Path,
    interrupt: &Interrupt,
    notes: Vec<String>,
) -> Result<(RunFiles, Trained), BoxError> {
    args.check()?;
    let data = resolve_data(&args.data)?;
    let (mut train, mut validation) = flows(&data, train_gen, args)?;
    let trained = fit(model, &mut train, &mut validation, args, interrupt)?;
    let info = ReportInfo {
        example,
        title,
        command: command_line(),
        data: &data,
        args,
        classes: class_list(&train),
        images: (train.samples(), validation.samples()),
        notes,
    };
    let files = write_run(out, model, &trained, &info)?;
    Ok((files, trained))
}

/// The `basic_cnn` program, minus the command line: build the basic CNN
/// for `args.target_size`, print its summary, train it on `args.data` fed
/// by `train_gen`, and write the run's files into `out`.
pub fn run_basic_cnn(
    example: &str,
    title: &str,
    args: &CommonArgs,
    train_gen: &ImageDataGenerator,
    out: &Path,
    interrupt: &Interrupt,
    notes: Vec<String>,
) -> Result<(RunFiles, Trained), BoxError> {
    args.check()?;
    resolve_data(&args.data)?;
    let mut model = basic_cnn_model(args.target_size, args.seed)?;
    model.summary();
    train_and_write(
        example, title, args, &mut model, train_gen, out, interrupt, notes,
    )
}

/// The augmentation flags of `augmented_cnn` and `inception_transfer`: the
/// mission's shifts, shear and zoom are always on; these two are extra.
#[derive(clap::Args, Debug, Clone, PartialEq, Default)]
pub struct AugmentArgs {
    /// Also rotate training images by a random angle of up to DEGREES
    /// either way (Keras's `rotation_range`; the mission tried 40 and notes
    /// it made results worse on its data); 0 means none.
    #[arg(long, value_name = "DEGREES", default_value_t = 0.0)]
    pub rotation: f32,

    /// Also flip training images left-right at random (Keras's
    /// `horizontal_flip=True`; the mission notes it made results worse).
    #[arg(long)]
    pub horizontal_flip: bool,
}

impl AugmentArgs {
    /// Refuse a rotation that is not a finite angle from 0 to 180 degrees.
    pub fn check(&self) -> Result<(), BoxError> {
        if !self.rotation.is_finite() || !(0.0..=180.0).contains(&self.rotation) {
            return Err(format!("--rotation {}: give degrees from 0 to 180", self.rotation).into());
        }
        Ok(())
    }

    /// The training generator: [`mission_augmentation`] with these flags.
    pub fn generator(&self) -> ImageDataGenerator {
        mission_augmentation(self.rotation, self.horizontal_flip)
    }

    /// One line for the report and the console.
    pub fn note(&self) -> String {
        format!(
            "training images augmented: rescale 1/255, width and height shifts 0.2, shear 0.2, \
             zoom 0.2, rotation {}, horizontal flip {}; validation images rescaled only",
            if self.rotation > 0.0 {
                format!("up to {} degrees", self.rotation)
            } else {
                "off".to_string()
            },
            if self.horizontal_flip { "on" } else { "off" }
        )
    }
}

/// The first training image of `data` (first class folder, first image
/// file, both by name), for pictures.
pub fn first_training_image(data: &Path) -> Result<PathBuf, BoxError> {
    let sorted = |dir: &Path| -> Result<Vec<PathBuf>, BoxError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let train = data.join("train");
    for class in sorted(&train)?.into_iter().filter(|p| p.is_dir()) {
        for file in sorted(&class)? {
            let ext = file
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if file.is_file() && convnet::data::directory::IMAGE_EXTENSIONS.contains(&ext.as_str())
            {
                return Ok(file);
            }
        }
    }
    Err(format!("{}: no image in any class folder", train.display()).into())
}

/// Write `augmentation_preview.png` into `out`: the first training image of
/// `data`, resized to the target size, under 9 random draws of `generator`
/// (a 3x3 grid, Keras's `ImageDataGenerator` tutorial picture). Returns
/// its path.
pub fn write_augmentation_preview(
    data: &Path,
    generator: &ImageDataGenerator,
    target: (usize, usize),
    seed: u64,
    out: &Path,
) -> Result<PathBuf, BoxError> {
    use convnet::data::{directory::load_img, ColorMode, Interpolation};
    let source = first_training_image(data)?;
    // The preview works on an image file at its own size: write the image
    // at the size the network sees, then remove that copy.
    let img = load_img(
        &source,
        Some(target),
        ColorMode::Rgb,
        Interpolation::Nearest,
    )?;
    let bytes: Vec<u8> = img
        .values()
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let resized = out.join(".augmentation_source.png");
    image::RgbImage::from_raw(target.1 as u32, target.0 as u32, bytes)
        .ok_or("image buffer of the wrong size")?
        .save(&resized)
        .map_err(|e| format!("{}: {e}", resized.display()))?;
    let png = out.join("augmentation_preview.png");
    let result = convnet::data::preview::augment_preview_seeded(&resized, generator, 9, &png, seed);
    let _ = std::fs::remove_file(&resized);
    result?;
    Ok(png)
}

/// Where the InceptionV3 base's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum BaseWeights {
    /// Keras's ImageNet weights, converted by `cargo xtask fetch-weights`.
    ImageNet(PathBuf),
    /// A safetensors file given with `--weights FILE`.
    File(PathBuf),
    /// Random initial weights (`--weights random`): the pipeline runs, the
    /// features mean nothing.
    Random,
}

impl BaseWeights {
    /// From the `--weights` flag: none means the ImageNet weights at
    /// `convnet::zoo::weights_path(include_top)`, which must exist; a
    /// missing file is an error telling the user to run
    /// `cargo xtask fetch-weights`.
    pub fn from_flag(flag: Option<&str>, include_top: bool) -> Result<Self, BoxError> {
        match flag {
            Some("random") => Ok(BaseWeights::Random),
            Some(file) => {
                let path = PathBuf::from(file);
                if !path.is_file() {
                    return Err(format!(
                        "--weights {file}: no such file (give a safetensors file, or `random`; \
                         leave --weights out to use the ImageNet weights that \
                         `cargo xtask fetch-weights` downloads)"
                    )
                    .into());
                }
                Ok(BaseWeights::File(path))
            }
            None => {
                let path = convnet::zoo::weights_path(include_top);
                if !path.is_file() {
                    return Err(format!(
                        "the ImageNet weights of InceptionV3 are not at {}: run \
                         `cargo xtask fetch-weights{}` once to download and convert them \
                         (set CONVNET_HOME to keep them elsewhere), or pass --weights FILE, \
                         or --weights random to run the pipeline from random weights",
                        path.display(),
                        if include_top { " --top" } else { "" }
                    )
                    .into());
                }
                Ok(BaseWeights::ImageNet(path))
            }
        }
    }

    /// Load into `model` (nothing for random weights).
    pub fn load(&self, model: &mut Model) -> Result<(), BoxError> {
        match self {
            BaseWeights::ImageNet(p) | BaseWeights::File(p) => {
                convnet::zoo::load_weights(model, p)?;
            }
            BaseWeights::Random => {}
        }
        Ok(())
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            BaseWeights::ImageNet(p) => format!("ImageNet weights from `{}`", p.display()),
            BaseWeights::File(p) => format!("weights from `{}`", p.display()),
            BaseWeights::Random => "RANDOM weights (--weights random): not pretrained".into(),
        }
    }
}

/// The loud warning printed (to stderr) when the base runs from random
/// weights.
pub fn random_weights_banner(example: &str) -> String {
    let bar = "!".repeat(76);
    let lines = [
        format!("{example}: --weights random"),
        "WARNING: the InceptionV3 base has RANDOM weights, NOT ImageNet's.".to_string(),
        "This checks the pipeline; its figures say nothing about transfer".to_string(),
        "learning. Run `cargo xtask fetch-weights` for the real weights.".to_string(),
    ];
    let mut s = format!("{bar}\n");
    for l in lines {
        let _ = writeln!(s, "!!  {l:<70}!!");
    }
    s.push_str(&bar);
    s
}
