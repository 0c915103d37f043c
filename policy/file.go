package policy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Timing and size limits of FileSource.
const (
	fileDebounce    = 50 * time.Millisecond  // quiet time after an event before re-reading
	fileMaxDebounce = 500 * time.Millisecond // re-read at the latest this long after the first event of a burst
	fileBackstop    = 2 * time.Second        // periodic re-read while fsnotify watches the directory
	filePoll        = 250 * time.Millisecond // periodic re-read while it cannot
	maxFileSize     = 16 << 20               // a policy file larger than this is refused
)

// FileSource is a [Source] that reads a policy document (YAML or JSON) from a
// file and reloads it when it changes.
//
// Watch reads the file at once, then watches its directory with fsnotify
// (and the directory of the file a symlink points to), so in-place writes,
// editors' write-and-rename and Kubernetes-style symlink swaps are all seen;
// bursts of events are debounced (about 50ms). A re-read every 2s backs the
// watch up, and when fsnotify cannot watch the directory (it does not exist
// yet, or inotify is exhausted) the file is polled every 250ms instead.
// Changes are therefore seen within a second.
//
// An event is emitted only when something changed: a new valid document
// (raw bytes and snapshot Hash both differ from the last emitted one), a
// document that does not parse or validate, or a file that cannot be read
// (missing, unreadable, larger than 16 MiB). Errors name the path and the
// reason; keeping the previous document in force is the caller's job.
//
// A FileSource is safe for concurrent use; each Watch call is independent.
type FileSource struct {
	path   string // absolute
	logger *slog.Logger
}

var _ Source = (*FileSource)(nil)

// NewFileSource returns a FileSource for the file at path, made absolute
// against the current directory. The file need not exist yet. A nil logger
// means slog.Default(); the source logs only trouble with watching (it falls
// back to polling), never the documents it emits.
func NewFileSource(path string, logger *slog.Logger) *FileSource {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &FileSource{path: path, logger: logger}
}

// Path returns the absolute path of the file.
func (f *FileSource) Path() string { return f.path }

// String returns "file:" and the absolute path of the file.
func (f *FileSource) String() string { return "file:" + f.path }

// Watch emits the file's document at once, then every change, until ctx
// ends; it then stops everything it started and returns ctx.Err(). emit is
// called from the goroutine that called Watch.
func (f *FileSource) Watch(ctx context.Context, emit func(Event)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dirs := f.newDirWatch()
	defer dirs.close()
	// Watch before the first read, so that no change can slip in between.
	dirs.sync(f.path)

	var last fileState
	f.reload(&last, emit)

	period := dirs.period()
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var (
		pending    bool      // debounce is armed
		burstStart time.Time // first event of the pending burst
	)
	schedule := func() {
		now := time.Now()
		if !pending {
			pending, burstStart = true, now
		}
		debounce.Reset(max(0, min(fileDebounce, fileMaxDebounce-now.Sub(burstStart))))
	}

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-dirs.events():
			if !ok {
				f.logger.Warn("policy: file watcher stopped; polling instead", "path", f.path)
				dirs.close()
			} else {
				dirs.seen(ev)
			}
			schedule()
		case err, ok := <-dirs.errors():
			if !ok {
				dirs.close()
			} else {
				f.logger.Warn("policy: file watcher error; re-reading", "path", f.path, "error", err)
			}
			schedule() // events may have been lost (e.g. an inotify queue overflow)
		case <-debounce.C:
			pending = false
			f.reload(&last, emit)
			dirs.sync(f.path)
		case <-ticker.C:
			f.reload(&last, emit)
			dirs.sync(f.path)
		}
		if p := dirs.period(); p != period {
			period = p
			ticker.Reset(period)
		}
	}
}

// fileState is what the last emitted event was about.
type fileState struct {
	haveRaw  bool     // raw holds the hash of the file's bytes, as last read
	raw      [32]byte // SHA-256 of the bytes
	readErr  string   // the last event was this read error
	snapHash string   // the last event was a snapshot with this Hash
}

// reload reads the file and emits an event if anything changed.
func (f *FileSource) reload(last *fileState, emit func(Event)) {
	data, err := readFile(f.path)
	if err != nil {
		err = sourceError(f, err)
		if last.readErr == err.Error() {
			return
		}
		*last = fileState{readErr: err.Error()}
		emit(Event{Err: err})
		return
	}
	sum := sha256.Sum256(data)
	if last.haveRaw && sum == last.raw {
		return // same bytes, same verdict
	}
	prev := last.snapHash
	*last = fileState{haveRaw: true, raw: sum}
	doc, err := Parse(data)
	var snap *Snapshot
	if err == nil {
		snap, err = NewSnapshot(doc, f.String())
	}
	if err != nil {
		emit(Event{Err: sourceError(f, err)})
		return
	}
	last.snapHash = snap.Hash
	if snap.Hash == prev {
		return // a comment or formatting change: same document
	}
	emit(Event{Snapshot: snap})
}

// readFile reads at most maxFileSize bytes of the file.
func readFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d MiB", path, maxFileSize>>20)
	}
	return data, nil
}

// dirWatch watches the directory of the file and, when the file is a
// symlink, the directory of its target. A nil watcher means polling.
type dirWatch struct {
	w       *fsnotify.Watcher
	dir     string          // directory of the path
	watched map[string]bool // directories being watched
	logger  *slog.Logger
}

func (f *FileSource) newDirWatch() *dirWatch {
	d := &dirWatch{dir: filepath.Dir(f.path), watched: make(map[string]bool), logger: f.logger}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.logger.Warn("policy: cannot watch the policy file; polling it instead", "path", f.path, "error", err)
		return d
	}
	d.w = w
	return d
}

// events and errors return the watcher's channels, nil (never ready) when
// polling.
func (d *dirWatch) events() <-chan fsnotify.Event {
	if d.w == nil {
		return nil
	}
	return d.w.Events
}

func (d *dirWatch) errors() <-chan error {
	if d.w == nil {
		return nil
	}
	return d.w.Errors
}

// period is how often to re-read the file without an event.
func (d *dirWatch) period() time.Duration {
	if d.w != nil && d.watched[d.dir] {
		return fileBackstop
	}
	return filePoll
}

// seen notes an event: a watched directory that is removed or renamed is no
// longer watched (sync adds it back once it exists again).
func (d *dirWatch) seen(ev fsnotify.Event) {
	if d.watched[ev.Name] && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		delete(d.watched, ev.Name)
		if d.w != nil {
			_ = d.w.Remove(ev.Name) // usually gone already
		}
	}
}

// sync watches the directory of path and of its symlink target, and stops
// watching target directories that are no longer in use.
func (d *dirWatch) sync(path string) {
	if d.w == nil {
		return
	}
	want := map[string]bool{d.dir: true}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		want[filepath.Dir(real)] = true
	}
	for dir := range d.watched {
		if !want[dir] {
			_ = d.w.Remove(dir)
			delete(d.watched, dir)
		}
	}
	for dir := range want {
		if d.watched[dir] {
			continue
		}
		if err := d.w.Add(dir); err != nil {
			if dir == d.dir && !errors.Is(err, os.ErrNotExist) {
				d.logger.Debug("policy: cannot watch directory; polling", "dir", dir, "error", err)
			}
			continue
		}
		d.watched[dir] = true
	}
}

// close stops the watcher and waits for its goroutine; polling goes on.
// It is safe to call twice.
func (d *dirWatch) close() {
	if d.w != nil {
		_ = d.w.Close()
		d.w = nil
	}
	clear(d.watched)
}
