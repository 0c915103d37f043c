package dirwatch

import (
	"log/slog"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// Reload configures Watcher.Run, the debounced reload loop that file sources
// share: events are debounced, then the files are reloaded; a backstop
// reloads them periodically anyway, more often when fsnotify does not watch
// every directory.
type Reload struct {
	// Debounce is the quiet time after an event before reloading, and
	// MaxDebounce the longest a burst of events can delay a reload.
	Debounce, MaxDebounce time.Duration
	// Period returns how long to wait for the next reload without an event,
	// given whether every directory is watched. It is asked again after
	// every event and reload, and the backstop follows its answer.
	Period func(watching bool) time.Duration
	// Clock runs the backstop; nil means the system clock. The debounce
	// always runs on the system clock: it follows real file events.
	Clock clock.Clock
	// Reload re-reads the files. It runs on Run's goroutine; the watched
	// directories are synced after it (a symlink may point elsewhere now).
	Reload func()
	// Log receives the trouble with watching, naming What ("policy file",
	// "certificate files"); nil means slog.Default().
	Log  *slog.Logger
	What string
}

// Run reloads the files on events and on the backstop until stop is closed,
// then closes the watcher. The first load is the caller's, done before Run
// (after Sync, so that no change slips in between). When fsnotify stops or
// fails, Run keeps going on the backstop alone, at the polling period.
func (d *Watcher) Run(stop <-chan struct{}, r Reload) {
	defer d.Close()
	clk := r.Clock
	if clk == nil {
		clk = clock.System{}
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}

	every := r.Period(d.Watching())
	backstop := clk.NewTimer(every)
	defer func() { backstop.Stop() }()
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
		debounce.Reset(max(0, min(r.Debounce, r.MaxDebounce-now.Sub(burstStart))))
	}
	reload := func() {
		r.Reload()
		d.Sync()
	}
	for {
		fired := false
		select {
		case <-stop:
			return
		case ev, ok := <-d.Events():
			if !ok {
				log.Warn("file watcher stopped; polling the "+r.What+" instead", "files", d.files)
				d.Close()
			} else {
				d.Seen(ev)
			}
			schedule()
		case err, ok := <-d.Errors():
			if !ok {
				d.Close()
			} else {
				log.Warn("file watcher error; re-reading the "+r.What, "files", d.files, "error", err)
			}
			schedule() // events may have been lost (e.g. an inotify queue overflow)
		case <-debounce.C:
			pending = false
			reload()
		case <-backstop.C():
			fired = true
			reload()
		}
		if p := r.Period(d.Watching()); fired || p != every {
			every = p
			backstop.Stop()
			backstop = clk.NewTimer(every)
		}
	}
}
