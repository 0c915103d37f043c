package policy

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func doc(timeout string) string {
	return "services:\n  billing:\n    timeout: " + timeout + "\n"
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// renameWrite replaces path atomically, as editors and config tools do.
func renameWrite(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// wantTimeout waits for the next event and checks it is a snapshot whose
// billing timeout is want.
func wantTimeout(t *testing.T, events <-chan Event, want time.Duration) *Snapshot {
	t.Helper()
	ev := next(t, events)
	if ev.Err != nil || ev.Snapshot == nil {
		t.Fatalf("want a snapshot, got %+v", ev)
	}
	if got := ev.Snapshot.Service("billing").Effective.Timeout; got != want {
		t.Fatalf("timeout = %v, want %v", got, want)
	}
	return ev.Snapshot
}

// wantErr waits for the next event and checks it is an error containing
// every one of parts.
func wantErr(t *testing.T, events <-chan Event, parts ...string) error {
	t.Helper()
	ev := next(t, events)
	if ev.Snapshot != nil || ev.Err == nil {
		t.Fatalf("want an error, got %+v", ev)
	}
	for _, p := range parts {
		if !strings.Contains(ev.Err.Error(), p) {
			t.Errorf("error %q lacks %q", ev.Err, p)
		}
	}
	return ev.Err
}

func newTestFileSource(path string) *FileSource {
	return NewFileSource(path, nil)
}

func TestFileSourceLifecycle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	writeFile(t, path, doc("1s"))
	src := newTestFileSource(path)
	if src.String() != "file:"+path || src.Path() != path {
		t.Errorf("String() = %q, Path() = %q", src.String(), src.Path())
	}
	events, stop := watch(t, src)

	// Initial load.
	snap := wantTimeout(t, events, time.Second)
	if snap.Source != "file:"+path {
		t.Errorf("snapshot source %q", snap.Source)
	}

	// An edit in place is applied.
	writeFile(t, path, doc("2s"))
	wantTimeout(t, events, 2*time.Second)

	// An invalid edit is reported, naming the file and the field; no snapshot.
	writeFile(t, path, doc("2 s"))
	err := wantErr(t, events, "file:"+path, `services.billing.timeout: invalid duration "2 s"`)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}

	// Fixed again, by an atomic rename-write.
	renameWrite(t, path, doc("3s"))
	wantTimeout(t, events, 3*time.Second)

	// The same bytes again, then a comment-only change: nothing to emit. The
	// next event must be the following real change.
	writeFile(t, path, doc("3s"))
	renameWrite(t, path, "# a comment\n"+doc("3s"))
	writeFile(t, path, doc("4s"))
	wantTimeout(t, events, 4*time.Second)

	// Deleted: reported once, naming the file and the reason.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err = wantErr(t, events, "file:"+path, "no such file")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}

	// Recreated with the content it had: emitted again, the file is back.
	writeFile(t, path, doc("4s"))
	wantTimeout(t, events, 4*time.Second)

	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v", err)
	}
}

func TestFileSourceMissingAtStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	events, _ := watch(t, newTestFileSource(path))
	wantErr(t, events, "file:"+path, "no such file")
	renameWrite(t, path, doc("1s"))
	wantTimeout(t, events, time.Second)
}

func TestFileSourceDirectoryMissingAtStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "mesh.yaml")
	events, _ := watch(t, newTestFileSource(path))
	wantErr(t, events, "no such file")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, doc("1s"))
	wantTimeout(t, events, time.Second)
	// Once the directory exists, it is watched.
	writeFile(t, path, doc("2s"))
	wantTimeout(t, events, 2*time.Second)
}

func TestFileSourceInvalidAtStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	writeFile(t, path, "services: {billing: {retry: {attempts: 11}}}")
	events, _ := watch(t, newTestFileSource(path))
	wantErr(t, events, "file:"+path+": policy: services.billing.retry.attempts: must be 1..10")
	writeFile(t, path, "")
	wantErr(t, events, "file:"+path+": policy: empty document")
	writeFile(t, path, doc("1s"))
	wantTimeout(t, events, time.Second)
}

// TestFileSourceSymlinkSwap follows the layout Kubernetes uses for mounted
// ConfigMaps: mesh.yaml -> ..data/mesh.yaml, ..data -> ..v1, and an update
// swaps ..data atomically.
func TestFileSourceSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "mesh.yaml"), content)
	}
	swap := func(target string) {
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", doc("1s"))
	swap("..v1")
	path := filepath.Join(dir, "mesh.yaml")
	if err := os.Symlink(filepath.Join("..data", "mesh.yaml"), path); err != nil {
		t.Fatal(err)
	}
	events, _ := watch(t, newTestFileSource(path))
	wantTimeout(t, events, time.Second)

	version("..v2", doc("2s"))
	swap("..v2")
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	wantTimeout(t, events, 2*time.Second)

	version("..v3", doc("3s"))
	swap("..v3")
	wantTimeout(t, events, 3*time.Second)
}

// TestFileSourceSymlinkElsewhere edits, in place, a file that the watched
// path links to from another directory.
func TestFileSourceSymlinkElsewhere(t *testing.T) {
	real := filepath.Join(t.TempDir(), "real.yaml")
	writeFile(t, real, doc("1s"))
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	events, _ := watch(t, newTestFileSource(path))
	wantTimeout(t, events, time.Second)
	writeFile(t, real, doc("2s"))
	wantTimeout(t, events, 2*time.Second)
}

func TestFileSourceCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := newTestFileSource(filepath.Join(t.TempDir(), "x.yaml")).Watch(ctx, func(ev Event) { t.Errorf("emitted %+v", ev) })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Watch = %v", err)
	}
}

// TestFileSourceReload drives one reload at a time, deterministically.
func TestFileSourceReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	src := newTestFileSource(path)
	var (
		state  fileState
		events []Event
	)
	reload := func() []Event {
		events = nil
		src.reload(&state, func(ev Event) { events = append(events, ev) })
		return events
	}
	steps := []struct {
		name    string
		prepare func()
		want    string // "": no event; "snap 1s"; "err <substring>"
	}{
		{"missing", func() {}, "err no such file"},
		{"still missing", func() {}, ""},
		{"created", func() { writeFile(t, path, doc("1s")) }, "snap 1s"},
		{"unchanged", func() {}, ""},
		{"same bytes rewritten", func() { renameWrite(t, path, doc("1s")) }, ""},
		{"comment only", func() { writeFile(t, path, "# c\n"+doc("1s")) }, ""},
		{"changed", func() { writeFile(t, path, doc("2s")) }, "snap 2s"},
		{"invalid", func() { writeFile(t, path, doc("-1s")) }, "err services.billing.timeout: must be > 0"},
		{"invalid unchanged", func() {}, ""},
		{"another invalid edit", func() { writeFile(t, path, doc("-2s")) }, "err services.billing.timeout: must be > 0, got -2s"},
		{"back to the last good document", func() { writeFile(t, path, doc("2s")) }, "snap 2s"},
		{"removed", func() { os.Remove(path) }, "err no such file"},
		{"recreated the same", func() { writeFile(t, path, doc("2s")) }, "snap 2s"},
		{"a directory", func() { os.Remove(path); os.Mkdir(path, 0o755) }, "err is a directory"},
		{"too large", func() {
			os.Remove(path)
			writeFile(t, path, doc("2s")+"#"+strings.Repeat("x", maxFileSize))
		}, "err larger than 8 MiB"},
	}
	for _, s := range steps {
		s.prepare()
		got := reload()
		switch {
		case s.want == "":
			if len(got) != 0 {
				t.Errorf("%s: emitted %+v", s.name, got)
			}
		case len(got) != 1:
			t.Errorf("%s: %d events, want 1 (%s)", s.name, len(got), s.want)
		case strings.HasPrefix(s.want, "snap "):
			want, _ := time.ParseDuration(strings.TrimPrefix(s.want, "snap "))
			if got[0].Snapshot == nil || got[0].Snapshot.Service("billing").Effective.Timeout != want {
				t.Errorf("%s: got %+v, want %s", s.name, got[0], s.want)
			}
		default:
			if got[0].Err == nil || !strings.Contains(got[0].Err.Error(), strings.TrimPrefix(s.want, "err ")) ||
				!strings.Contains(got[0].Err.Error(), path) {
				t.Errorf("%s: got %+v, want %s", s.name, got[0], s.want)
			}
		}
	}
}
