//! `baldr`: pack lines into Baldr files, print, count and verify them.
//!
//! Contract (other tools rely on it exactly):
//! - `baldr pack [--gzip|--zstd] [-o OUT] [FILE...]`: each input line (bytes before `\n`,
//!   newline removed; an empty line is an empty record) becomes one record; stdin when no FILE.
//! - `baldr cat [FILE...]`: records, each followed by `\n`, to stdout; compression
//!   auto-detected; stdin when no FILE or `-`.
//! - `baldr count FILE...`: the number of records, one line per file (`N` alone for a single
//!   file, `N<TAB>FILE` for several, then `N<TAB>total`).
//! - `baldr verify FILE...`: exit 0 when every file is intact; otherwise exit 1 and, on
//!   stderr, `FILE: byte offset N: <what is wrong>` for the first bad record of each bad file.
//! - Damaged input makes `cat` and `count` exit 1 with the same message. Byte offsets count
//!   the uncompressed record stream. Usage errors exit 2.
//! - `cat`, `count` and `verify` also take object-store URLs (`s3://BUCKET/KEY`,
//!   `az://CONTAINER/KEY`, `file:///ABS/PATH`), opened as every binary opens a store
//!   (`AWS_*` / `AZURE_*` variables, `--store-option`): a URL naming an object reads it; a URL naming a prefix
//!   (`s3://bucket/group/topic/partition=0/`) reads every `*.baldr`, `*.baldr.gz` and
//!   `*.baldr.zst` object under it in key order, each as one input (a progress bar over the
//!   objects on a terminal).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use baldr::{Compression, Compressor, Reader, Writer};
use clap::{Parser, Subcommand};

/// Command-line arguments of `baldr`.
#[derive(Debug, Parser)]
#[command(
    name = "baldr",
    version,
    about = "Pack, print, count and verify Baldr record files (plain, gzip or zstd)"
)]
pub struct Args {
    /// Largest record payload accepted when reading, in bytes (a guard against damaged
    /// length headers).
    #[arg(long, global = true, value_name = "BYTES", default_value_t = baldr::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: u64,
    /// An option of the object stores URLs name (`aws_endpoint=http://...`; repeatable; the
    /// `AWS_*` variables are read too).
    #[arg(long = "store-option", global = true, value_name = "KEY=VALUE", value_parser = parse_store_option)]
    pub store_options: Vec<(String, String)>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn each input line (newline removed) into one record.
    Pack {
        /// Compress the output with gzip.
        #[arg(long, conflicts_with = "zstd")]
        gzip: bool,
        /// Compress the output with zstd.
        #[arg(long)]
        zstd: bool,
        /// Write to OUT (atomically, through a temporary file) instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<PathBuf>,
        /// Input files of lines; stdin when none or `-`.
        files: Vec<PathBuf>,
    },
    /// Print every record followed by a newline.
    Cat {
        /// Baldr files (compression detected); stdin when none or `-`.
        files: Vec<PathBuf>,
    },
    /// Count the records of each file.
    Count {
        /// Baldr files (compression detected); `-` is stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check that every file is intact.
    Verify {
        /// Baldr files (compression detected); `-` is stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn parse_store_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => {
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        }
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// Runs `baldr` with parsed arguments; returns the process exit code.
pub fn run(args: Args) -> ExitCode {
    let max = args.max_record_bytes;
    let options = args.store_options;
    let expand = |files: &[PathBuf]| objects::expand(files, &options);
    let (cat, count, verify) = (
        |f: &[PathBuf]| expand(f).and_then(|i| cat(&i, max)),
        |f: &[PathBuf]| expand(f).and_then(|i| count(&i, max)),
        |f: &[PathBuf]| expand(f).map(|i| verify(&i, max)),
    );
    let result = match args.command {
        Command::Pack {
            gzip,
            zstd,
            output,
            files,
        } => {
            let compression = match (gzip, zstd) {
                (true, _) => Compression::Gzip,
                (_, true) => Compression::Zstd,
                _ => Compression::None,
            };
            pack(&files, compression, output.as_deref()).map(|()| true)
        }
        Command::Cat { files } => cat(&files),
        Command::Count { files } => count(&files),
        Command::Verify { files } => verify(&files),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baldr: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A reader downstream closed (`baldr cat big.baldr.gz | head`): stop quietly.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `-` or nothing means stdin.
fn inputs(files: &[PathBuf]) -> Vec<&Path> {
    if files.is_empty() {
        vec![Path::new("-")]
    } else {
        files.iter().map(PathBuf::as_path).collect()
    }
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

/// Object-store inputs: URLs expanded to objects, read through the shared store opening.
mod objects {
    use std::io::{self, IsTerminal, Read};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use anyhow::Context;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as Key;

    /// One input: a file (or `-`), or an object.
    pub enum Input {
        /// A local file or stdin.
        File(PathBuf),
        /// An object of a store.
        Object {
            /// The URL it is shown as.
            url: String,
            store: Arc<dyn object_store::ObjectStore>,
            key: Key,
            /// The runtime its reads run on.
            runtime: Arc<tokio::runtime::Runtime>,
            /// The progress over several objects (on a terminal).
            bar: Option<indicatif::ProgressBar>,
        },
    }

    impl Input {
        pub fn name(&self) -> String {
            match self {
                Input::File(p) => super::name(p),
                Input::Object { url, .. } => url.clone(),
            }
        }

        /// The file's path (`None` for an object).
        pub fn path(&self) -> Option<&Path> {
            match self {
                Input::File(p) => Some(p),
                Input::Object { .. } => None,
            }
        }

        /// The object's bytes.
        pub fn read(&self) -> io::Result<Box<dyn Read>> {
            let Input::Object {
                store,
                key,
                runtime,
                bar,
                url,
            } = self
            else {
                return Err(io::Error::other("not an object"));
            };
            if let Some(bar) = bar {
                bar.set_message(url.clone());
            }
            let bytes = runtime
                .block_on(async { store.get(key).await?.bytes().await })
                .map_err(io::Error::other)?;
            if let Some(bar) = bar {
                bar.inc(1);
            }
            Ok(Box::new(io::Cursor::new(bytes)))
        }
    }

    fn is_baldr(key: &str) -> bool {
        [".baldr", ".baldr.gz", ".baldr.zst"]
            .iter()
            .any(|s| key.ends_with(s))
    }

    /// Files stay files; each URL becomes its object, or every Baldr object under it.
    pub fn expand(files: &[PathBuf], options: &[(String, String)]) -> anyhow::Result<Vec<Input>> {
        let mut out = Vec::new();
        let mut runtime = None;
        let mut objects = 0;
        for f in super::inputs(files) {
            let text = f.to_string_lossy();
            if !text.contains("://") {
                out.push(Input::File(f.to_path_buf()));
                continue;
            }
            // A local path: a file is read as such; a directory must exist (opening a
            // file:// store would create it).
            if let Some(local) = text.strip_prefix("file://") {
                let p = Path::new(local);
                if p.is_file() {
                    out.push(Input::File(p.to_path_buf()));
                    continue;
                }
                if !p.is_dir() {
                    anyhow::bail!("{text}: no object, and no *.baldr* objects under it");
                }
            }
            let rt = match &runtime {
                Some(rt) => Arc::clone(rt),
                None => {
                    let rt = Arc::new(
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("cannot start an I/O runtime")?,
                    );
                    runtime = Some(Arc::clone(&rt));
                    rt
                }
            };
            let opened = lifecycle::store::open(&text, options)?;
            let base = text.trim_end_matches('/').to_string();
            let store = opened.store.clone();
            let prefix = opened.prefix.clone();
            let single = !prefix.as_ref().is_empty() && rt.block_on(store.head(&prefix)).is_ok();
            let keys: Vec<Key> = if single {
                vec![prefix.clone()]
            } else {
                let listed: Vec<object_store::ObjectMeta> = rt
                    .block_on(futures::TryStreamExt::try_collect(
                        store.list((!prefix.as_ref().is_empty()).then_some(&prefix)),
                    ))
                    .with_context(|| format!("{text}: cannot list"))?;
                let mut keys: Vec<Key> = listed
                    .into_iter()
                    .map(|m| m.location)
                    .filter(|k| is_baldr(k.as_ref()))
                    .collect();
                keys.sort();
                if keys.is_empty() {
                    anyhow::bail!("{text}: no object, and no *.baldr* objects under it");
                }
                keys
            };
            for key in keys {
                let url = if single {
                    base.clone()
                } else {
                    let rel = key
                        .as_ref()
                        .strip_prefix(prefix.as_ref())
                        .unwrap_or(key.as_ref());
                    format!("{base}/{}", rel.trim_start_matches('/'))
                };
                objects += 1;
                out.push(Input::Object {
                    url,
                    store: store.clone(),
                    key,
                    runtime: Arc::clone(&rt),
                    bar: None,
                });
            }
        }
        if objects > 1 && io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(objects).with_style(
                indicatif::ProgressStyle::with_template(
                    "[{bar:30}] {pos}/{len} objects ({per_sec}, {eta}) {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            for i in &mut out {
                if let Input::Object { bar: b, .. } = i {
                    *b = Some(bar.clone());
                }
            }
        }
        Ok(out)
    }
}

/// Opens an input file (or stdin for `-`), with a progress bar on stderr when it is a
/// terminal and the input a regular file.
fn open_input(path: &Path, progress: bool) -> io::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if progress && io::stderr().is_terminal() && len > 0 {
        let bar = indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(name(path));
        return Ok(Box::new(FinishOnDrop(bar.wrap_read(file))));
    }
    Ok(Box::new(file))
}

/// Clears the progress bar when the input is done with.
struct FinishOnDrop<R>(indicatif::ProgressBarIter<R>);

impl<R: Read> Read for FinishOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R> Drop for FinishOnDrop<R> {
    fn drop(&mut self) {
        self.0.progress.finish_and_clear();
    }
}

/// Why reading one input stopped early.
enum Stop {
    /// The input is damaged or unreadable: reported as `FILE: <error>`.
    Input(String),
    /// Writing the output failed: fatal for the whole command.
    Output(io::Error),
}

/// Reads every record of `path`, handing each to `each`; returns the record count.
fn for_each_record(
    input: &objects::Input,
    max: u64,
    progress: bool,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, Stop> {
    let input = match input.path() {
        Some(path) => open_input(path, progress),
        None => input.read(),
    }
    .map_err(|e| Stop::Input(format!("cannot open: {e}")))?;
    let decompressed = baldr::open(input).map_err(|e| Stop::Input(format!("I/O error: {e}")))?;
    let mut n = 0u64;
    for record in Reader::new(decompressed).with_max_record_bytes(max) {
        let record = record.map_err(|e| {
            Stop::Input(match e {
                baldr::Error::TooLarge { .. } => format!("{e} (see --max-record-bytes)"),
                e => e.to_string(),
            })
        })?;
        each(&record).map_err(Stop::Output)?;
        n += 1;
    }
    Ok(n)
}

fn cat(inputs: &[objects::Input], max: u64) -> anyhow::Result<bool> {
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut ok = true;
    for input in inputs {
        let result = for_each_record(input, max, false, |record| {
            out.write_all(record)?;
            out.write_all(b"\n")
        });
        match result {
            Ok(_) => {}
            Err(Stop::Input(msg)) => {
                // What came before the damage is out before the message.
                out.flush().context("cannot write to stdout")?;
                eprintln!("{}: {msg}", input.name());
                ok = false;
            }
            Err(Stop::Output(e)) => return Err(e).context("cannot write to stdout"),
        }
    }
    out.flush().context("cannot write to stdout")?;
    Ok(ok)
}

fn count(inputs: &[objects::Input], max: u64) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    let several = inputs.len() > 1;
    let mut ok = true;
    let mut total = 0u64;
    for input in inputs {
        match for_each_record(input, max, true, |_| Ok(())) {
            Ok(n) if several => {
                total += n;
                writeln!(out, "{n}\t{}", input.name()).context("cannot write to stdout")?;
            }
            Ok(n) => writeln!(out, "{n}").context("cannot write to stdout")?,
            Err(Stop::Input(msg)) => {
                eprintln!("{}: {msg}", input.name());
                ok = false;
            }
            Err(Stop::Output(e)) => return Err(e).context("cannot write to stdout"),
        }
    }
    // A total that silently left out a damaged file would mislead: none then.
    if several && ok {
        writeln!(out, "{total}\ttotal").context("cannot write to stdout")?;
    }
    Ok(ok)
}

fn verify(inputs: &[objects::Input], max: u64) -> bool {
    let mut ok = true;
    for input in inputs {
        let msg = match for_each_record(input, max, true, |_| Ok(())) {
            Ok(_) => continue,
            Err(Stop::Input(msg)) => msg,
            Err(Stop::Output(e)) => format!("I/O error: {e}"),
        };
        eprintln!("{}: {msg}", input.name());
        ok = false;
    }
    ok
}

fn pack(files: &[PathBuf], compression: Compression, output: Option<&Path>) -> anyhow::Result<()> {
    match output {
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write binary records to a terminal: use -o OUT or redirect stdout"
                );
            }
            let writer = baldr::compressed_writer(stdout.lock(), compression)?;
            let mut stdout = pack_into(files, writer).context("cannot write to stdout")?;
            stdout.flush().context("cannot write to stdout")?;
        }
        Some(out) => {
            let dir = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot create a file in {}", dir.display()))?;
            let writer = baldr::compressed_writer(BufWriter::new(tmp), compression)?;
            let tmp = pack_into(files, writer)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let tmp = tmp.into_inner().map_err(|e| e.into_error())?;
            tmp.as_file().sync_all()?;
            tmp.persist(out)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
    }
    Ok(())
}

/// Packs every input's lines into `writer`; returns the finished inner writer.
fn pack_into<W: Write>(files: &[PathBuf], mut writer: Writer<Compressor<W>>) -> anyhow::Result<W> {
    let mut line = Vec::with_capacity(4096);
    for path in inputs(files) {
        let input =
            open_input(path, false).with_context(|| format!("{}: cannot open", name(path)))?;
        let mut input = BufReader::with_capacity(64 * 1024, input);
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .with_context(|| format!("{}: cannot read", name(path)))?;
            if n == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            writer.write_record(&line)?;
        }
    }
    Ok(writer.finish()?.finish()?)
}
