package dirwatch

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
)

// Watcher watches the directories of files and of their symlink targets.
type Watcher struct {
	w       *fsnotify.Watcher // nil: polling only
	files   []string
	watched map[string]bool // directories being watched
	log     *slog.Logger
}

// New returns a watcher for files. With disabled, or when fsnotify cannot
// start (logged at warning level, naming what), it watches nothing and the
// owner must poll. Call Sync to start watching.
func New(files []string, disabled bool, what string, logger *slog.Logger) *Watcher {
	d := &Watcher{files: files, watched: map[string]bool{}, log: logger}
	if disabled {
		return d
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		logger.Warn("cannot watch the "+what+"; polling instead", "files", files, "error", err)
		return d
	}
	d.w = w
	return d
}

// Events returns the watcher's events; nil (never ready) when polling.
func (d *Watcher) Events() <-chan fsnotify.Event {
	if d.w == nil {
		return nil
	}
	return d.w.Events
}

// Errors returns the watcher's errors; nil (never ready) when polling.
func (d *Watcher) Errors() <-chan error {
	if d.w == nil {
		return nil
	}
	return d.w.Errors
}

// Watching reports whether the directory of every file is watched, so the
// owner may poll less often.
func (d *Watcher) Watching() bool {
	if d.w == nil {
		return false
	}
	for _, f := range d.files {
		if !d.watched[filepath.Dir(f)] {
			return false
		}
	}
	return true
}

// Seen notes an event: a watched directory that is removed or renamed is no
// longer watched (Sync adds it back once it exists again).
func (d *Watcher) Seen(ev fsnotify.Event) {
	if d.watched[ev.Name] && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		delete(d.watched, ev.Name)
		if d.w != nil {
			_ = d.w.Remove(ev.Name) // usually gone already
		}
	}
}

// Sync watches the directories of the files and of their symlink targets,
// and stops watching directories no longer in use. Directories that do not
// exist yet are tried again at the next Sync.
func (d *Watcher) Sync() {
	if d.w == nil {
		return
	}
	want := map[string]bool{}
	for _, p := range d.files {
		want[filepath.Dir(p)] = true
		if real, err := filepath.EvalSymlinks(p); err == nil {
			want[filepath.Dir(real)] = true
		}
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
			if !errors.Is(err, os.ErrNotExist) {
				d.log.Debug("cannot watch a directory; polling it", "dir", dir, "error", err)
			}
			continue
		}
		d.watched[dir] = true
	}
}

// Close stops the watcher; the owner's polling goes on. It is safe to call
// twice.
func (d *Watcher) Close() {
	if d.w != nil {
		_ = d.w.Close()
		d.w = nil
	}
	clear(d.watched)
}
