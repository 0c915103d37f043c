package policy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/inmesh/inmesh/internal/dirwatch"
)

// Timing and size limits of FileSource.
const (
	fileDebounce    = 50 * time.Millisecond  // quiet time after an event before re-reading
	fileMaxDebounce = 500 * time.Millisecond // re-read at the latest this long after the first event of a burst
	fileBackstop    = 2 * time.Second        // periodic re-read while fsnotify watches the directory
	filePoll        = 250 * time.Millisecond // periodic re-read while it cannot
	maxFileSize     = MaxDocumentSize        // a policy file larger than this is refused, read no further
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
// (missing, unreadable, larger than 8 MiB). Errors name the path and the
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
	dirs := dirwatch.New([]string{f.path}, false, "policy file", f.logger)
	defer dirs.Close()
	// Watch before the first read, so that no change can slip in between.
	dirs.Sync()

	var last fileState
	f.reload(&last, emit)
	dirs.Run(ctx.Done(), dirwatch.Reload{
		Debounce:    fileDebounce,
		MaxDebounce: fileMaxDebounce,
		Period:      rereadPeriod,
		Reload:      func() { f.reload(&last, emit) },
		Log:         f.logger,
		What:        "policy file",
	})
	return ctx.Err()
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

// rereadPeriod is how often to re-read the file without an event: rarely
// while its directory is watched, often when polling.
func rereadPeriod(watching bool) time.Duration {
	if watching {
		return fileBackstop
	}
	return filePoll
}
