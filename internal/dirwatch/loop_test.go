package dirwatch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

// runLoop starts Run on d and returns the reloads it makes and a function
// that stops it and waits for it to end.
func runLoop(t *testing.T, d *Watcher, r Reload) (<-chan struct{}, func()) {
	t.Helper()
	reloads := make(chan struct{}, 100)
	r.Reload = func() { reloads <- struct{}{} }
	r.Log = quiet()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		d.Run(stop, r)
	}()
	var stopped bool
	end := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	t.Cleanup(end)
	return reloads, end
}

func waitReload(t *testing.T, reloads <-chan struct{}, why string) {
	t.Helper()
	select {
	case <-reloads:
	case <-time.After(5 * time.Second):
		t.Fatalf("no reload %s", why)
	}
}

// TestRunBackstop: without fsnotify the loop reloads on the backstop alone,
// at the period for an unwatched directory, on the injected clock.
func TestRunBackstop(t *testing.T) {
	fake := clocktest.NewFake(time.Now())
	d := New([]string{filepath.Join(t.TempDir(), "x")}, true, "test file", quiet())
	var asked []bool
	reloads, end := runLoop(t, d, Reload{
		Debounce: time.Millisecond, MaxDebounce: time.Second, Clock: fake,
		Period: func(watching bool) time.Duration { asked = append(asked, watching); return time.Minute },
	})
	for range 2 {
		fake.BlockUntilTimers(1)
		if len(reloads) != 0 {
			t.Fatal("reloaded before the backstop")
		}
		fake.Advance(time.Minute)
		waitReload(t, reloads, "on the backstop")
	}
	end()
	for _, w := range asked {
		if w {
			t.Fatal("Period was told a disabled watcher watches")
		}
	}
	if fake.PendingTimers() != 0 {
		t.Errorf("%d backstop timers left after Run returned", fake.PendingTimers())
	}
	if d.Events() != nil {
		t.Error("Run left the watcher open")
	}
}

// TestRunReloadsOnEvents: a write into a watched directory reloads (after
// the debounce), with the backstop far away.
func TestRunReloadsOnEvents(t *testing.T) {
	fake := clocktest.NewFake(time.Now())
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	d := New([]string{path}, false, "test file", quiet())
	d.Sync()
	if !d.Watching() {
		t.Skip("fsnotify cannot watch here")
	}
	reloads, _ := runLoop(t, d, Reload{
		Debounce: 5 * time.Millisecond, MaxDebounce: 50 * time.Millisecond, Clock: fake,
		Period: func(bool) time.Duration { return time.Hour },
	})
	for i := range 3 {
		if err := os.WriteFile(path, []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		waitReload(t, reloads, "after a write")
	}
}
