//! Thin owners of libav objects, error strings and the log hook. Everything unsafe about libav
//! lives in this module and its siblings; pointers never leave them.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

pub(crate) use ffmpeg_sys_next as ff;

pub(crate) const EAGAIN: c_int = ff::AVERROR(ff::EAGAIN);

/// libav's text for an error code ("Invalid data found when processing input").
pub(crate) fn err_string(code: c_int) -> String {
    let mut buf = [0 as c_char; 256];
    // SAFETY: the buffer is writable and its length is passed; av_strerror always terminates it.
    unsafe {
        if ff::av_strerror(code, buf.as_mut_ptr(), buf.len()) < 0 {
            return format!("libav error {code}");
        }
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

/// The errno behind an `AVERROR(errno)` code, if it is one.
pub(crate) fn errno_of(code: c_int) -> Option<i32> {
    (code < 0 && -code < 4096).then_some(-code)
}

/// A C string of a path (its bytes on Unix); `None` only for a path with a NUL byte.
pub(crate) fn c_path(path: &Path) -> Option<CString> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        CString::new(path.as_os_str().as_bytes()).ok()
    }
    #[cfg(not(unix))]
    {
        CString::new(path.to_str()?).ok()
    }
}

pub(crate) fn c_str(s: &str) -> Option<CString> {
    CString::new(s).ok()
}

/// A static C string from libav (names of formats, codecs, pixel formats).
pub(crate) fn static_str(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    // SAFETY: libav's names are static, NUL-terminated ASCII.
    unsafe { CStr::from_ptr(p).to_str().unwrap_or("") }
}

macro_rules! owner {
    ($(#[$doc:meta])* $name:ident, $ty:ty, |$p:ident| $free:expr) => {
        $(#[$doc])*
        pub(crate) struct $name(pub(crate) *mut $ty);

        impl $name {
            #[allow(dead_code)]
            pub(crate) fn as_ptr(&self) -> *mut $ty {
                self.0
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                if !self.0.is_null() {
                    let $p = &mut self.0;
                    // SAFETY: the pointer is owned by this value and freed once.
                    unsafe { $free };
                }
            }
        }

        // SAFETY: libav objects may move between threads; each is used by one thread at a time
        // (the owners are not Sync).
        unsafe impl Send for $name {}
    };
}

owner!(
    /// A demuxer opened with `avformat_open_input`.
    InputCtx, ff::AVFormatContext, |p| ff::avformat_close_input(p)
);
owner!(CodecCtx, ff::AVCodecContext, |p| ff::avcodec_free_context(
    p
));
owner!(AvFrame, ff::AVFrame, |p| ff::av_frame_free(p));
owner!(AvPacket, ff::AVPacket, |p| ff::av_packet_free(p));
owner!(SwsCtx, ff::SwsContext, |p| ff::sws_freeContext(*p));
owner!(Dict, ff::AVDictionary, |p| ff::av_dict_free(p));

/// A muxer context; its file (if opened) is closed before the context is freed.
pub(crate) struct OutputCtx(pub(crate) *mut ff::AVFormatContext);

impl OutputCtx {
    pub(crate) fn as_ptr(&self) -> *mut ff::AVFormatContext {
        self.0
    }

    /// Closes the output file, flushing buffered bytes; returns libav's error code of the
    /// flush/close (write errors such as a full disk surface here as well).
    pub(crate) fn close_file(&mut self) -> c_int {
        // SAFETY: the context is valid; avio_closep nulls `pb`.
        unsafe {
            let ctx = self.0;
            if ctx.is_null() || (*ctx).pb.is_null() {
                return 0;
            }
            ff::avio_flush((*ctx).pb);
            let err = (*(*ctx).pb).error;
            let closed = ff::avio_closep(&mut (*ctx).pb);
            if err < 0 {
                err
            } else {
                closed
            }
        }
    }
}

impl Drop for OutputCtx {
    fn drop(&mut self) {
        if !self.0.is_null() {
            self.close_file();
            // SAFETY: owned, freed once.
            unsafe { ff::avformat_free_context(self.0) };
        }
    }
}

// SAFETY: as for the other owners.
unsafe impl Send for OutputCtx {}

impl AvFrame {
    pub(crate) fn new() -> Option<AvFrame> {
        // SAFETY: plain allocation.
        let p = unsafe { ff::av_frame_alloc() };
        (!p.is_null()).then_some(AvFrame(p))
    }
}

impl AvPacket {
    pub(crate) fn new() -> Option<AvPacket> {
        // SAFETY: plain allocation.
        let p = unsafe { ff::av_packet_alloc() };
        (!p.is_null()).then_some(AvPacket(p))
    }
}

impl Dict {
    pub(crate) fn new() -> Dict {
        Dict(ptr::null_mut())
    }

    /// Sets `key` (`None` when a string has a NUL byte or libav refuses it).
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Option<()> {
        let (k, v) = (c_str(key)?, c_str(value)?);
        // SAFETY: av_dict_set copies key and value.
        let r = unsafe { ff::av_dict_set(&mut self.0, k.as_ptr(), v.as_ptr(), 0) };
        (r >= 0).then_some(())
    }

    /// Every entry, in order.
    pub(crate) fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let empty = c"";
        let mut e: *mut ff::AVDictionaryEntry = ptr::null_mut();
        loop {
            // SAFETY: iteration over a valid (or null) dictionary.
            e = unsafe {
                ff::av_dict_get(
                    self.0,
                    empty.as_ptr(),
                    e,
                    ff::AV_DICT_IGNORE_SUFFIX as c_int,
                )
            };
            if e.is_null() {
                return out;
            }
            // SAFETY: entries hold NUL-terminated strings.
            unsafe {
                out.push((
                    CStr::from_ptr((*e).key).to_string_lossy().into_owned(),
                    CStr::from_ptr((*e).value).to_string_lossy().into_owned(),
                ));
            }
        }
    }
}

/// `key` of a libav dictionary (stream tags), exact match, case-insensitive.
pub(crate) fn get_dict(dict: *const ff::AVDictionary, key: &str) -> Option<String> {
    let k = c_str(key)?;
    // SAFETY: lookup in a valid (or null) dictionary.
    unsafe {
        let e = ff::av_dict_get(dict, k.as_ptr(), ptr::null(), 0);
        (!e.is_null()).then(|| CStr::from_ptr((*e).value).to_string_lossy().into_owned())
    }
}

/// Reads a C enum field as its integer value (libav may hold values the Rust enum lacks).
pub(crate) fn enum_int<T>(field: &T) -> c_int {
    debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<c_int>());
    // SAFETY: every libav enum field is a C int.
    unsafe { *(field as *const T as *const c_int) }
}

/// Writes an integer into a C enum field. Callers pass only values that libav defines.
///
/// # Safety
/// `value` must be a valid value of the C enum behind `field`.
pub(crate) unsafe fn set_enum_int<T>(field: &mut T, value: c_int) {
    debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<c_int>());
    *(field as *mut T as *mut c_int) = value;
}

// ----------------------------------------------------------------------------------------------
// Logging. libav prints to stderr by default, at "info" level. We lower the default to errors
// (the CLI reports problems itself) and, where the platform's va_list is known, capture the error
// messages of demuxers we watch, so that a container that ends early ("File ended prematurely",
// which libav reports only in its log) becomes an error that names the file.

static INIT: Once = Once::new();

/// A watched context: its address, the watch's id, the first error message seen.
type Watched = (usize, u64, Option<String>);

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static NEXT_WATCH: AtomicU64 = AtomicU64::new(0);

pub(crate) fn init() {
    INIT.call_once(|| {
        // SAFETY: global libav settings, set once before any other libav call of ours.
        unsafe {
            if ff::av_log_get_level() == ff::AV_LOG_INFO as c_int {
                ff::av_log_set_level(ff::AV_LOG_ERROR as c_int);
            }
            #[cfg(all(target_arch = "x86_64", unix))]
            ff::av_log_set_callback(Some(log_hook::callback));
        }
    });
}

/// Collects the error-level log messages libav emits for one context. Drop it before the
/// context is freed (so that a new context at the same address is not mistaken for it).
pub(crate) struct LogWatch {
    id: u64,
}

impl LogWatch {
    pub(crate) fn new<T>(ctx: *mut T) -> LogWatch {
        let id = NEXT_WATCH.fetch_add(1, Ordering::Relaxed);
        let mut w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
        w.push((ctx as usize, id, None));
        LogWatch { id }
    }

    /// The first error libav logged for the context, if any.
    pub(crate) fn error(&self) -> Option<String> {
        let w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .find(|(_, id, _)| *id == self.id)
            .and_then(|(_, _, m)| m.clone())
    }
}

impl Drop for LogWatch {
    fn drop(&mut self) {
        let mut w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|(_, id, _)| *id != self.id);
    }
}

#[cfg(all(target_arch = "x86_64", unix))]
mod log_hook {
    use std::io::Write;
    use std::os::raw::{c_char, c_int, c_void};
    use std::sync::atomic::{AtomicI32, Ordering};

    use super::{ff, WATCHED};

    static PRINT_PREFIX: AtomicI32 = AtomicI32::new(1);

    /// Replacement for `av_log_default_callback`: watched contexts' errors are recorded (and not
    /// printed); everything else at or above the log level is printed as libav would.
    pub(super) unsafe extern "C" fn callback(
        avcl: *mut c_void,
        level: c_int,
        fmt: *const c_char,
        vl: *mut ff::__va_list_tag,
    ) {
        let watched_error = level <= ff::AV_LOG_ERROR as c_int && {
            let w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
            w.iter().any(|(k, _, _)| *k == avcl as usize)
        };
        if !watched_error && level > ff::av_log_get_level() {
            return;
        }
        let mut line = [0 as c_char; 1024];
        let mut prefix = if watched_error {
            0
        } else {
            PRINT_PREFIX.load(Ordering::Relaxed)
        };
        ff::av_log_format_line2(
            avcl,
            level,
            fmt,
            vl,
            line.as_mut_ptr(),
            line.len() as c_int,
            &mut prefix,
        );
        let text = std::ffi::CStr::from_ptr(line.as_ptr()).to_string_lossy();
        if watched_error {
            let mut w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
            for (_, _, slot) in w.iter_mut().filter(|(k, _, _)| *k == avcl as usize) {
                slot.get_or_insert_with(|| text.trim().to_string());
            }
        } else {
            PRINT_PREFIX.store(prefix, Ordering::Relaxed);
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}
