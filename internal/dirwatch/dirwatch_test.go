package dirwatch

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitEvent waits (with a generous bound) for an event naming path.
func waitEvent(t *testing.T, d *Watcher, path string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-d.Events():
			d.Seen(ev)
			if ev.Name == path {
				return
			}
		case <-deadline:
			t.Fatalf("no event for %s", path)
		}
	}
}

func TestWatcherSeesRenameWritesAndSymlinkTargets(t *testing.T) {
	dir, targets := t.TempDir(), t.TempDir()
	target := filepath.Join(targets, "real.yaml")
	if err := os.WriteFile(target, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "mesh.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	d := New([]string{link}, false, "test file", quiet())
	defer d.Close()
	d.Sync()
	if !d.Watching() {
		t.Fatal("the directory is not watched")
	}
	// An in-place edit of the link's target is seen through its directory.
	if err := os.WriteFile(target, []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, target)
	// A rename-write into the watched directory is seen.
	tmp := filepath.Join(dir, ".mesh.yaml.tmp")
	if err := os.WriteFile(tmp, []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, link)
	// The link is a plain file now: the target's directory is dropped.
	d.Sync()
	if d.watched[targets] {
		t.Fatal("the old target directory is still watched")
	}
	d.Close()
	d.Close() // twice is fine
	if d.Watching() || d.Events() != nil {
		t.Fatal("a closed watcher still watches")
	}
}

func TestDisabledWatcherPolls(t *testing.T) {
	d := New([]string{filepath.Join(t.TempDir(), "x")}, true, "test file", quiet())
	d.Sync()
	if d.Watching() || d.Events() != nil || d.Errors() != nil {
		t.Fatal("a disabled watcher watches")
	}
	d.Close()
}
