package mesh

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// A missing policy file fails New at once, naming the path; it does not
// wait for the context (which would fail the test by ending first).
func TestNewFailsAtOnceOnAMissingPolicyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("tester"), WithPolicyFile(path), WithLogger(meshtest.QuietLogger()))
	if err == nil {
		_ = m.Close()
		t.Fatal("New accepted a missing policy file")
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New waited for the context: %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("New: %v, want an error naming %s and wrapping fs.ErrNotExist", err, path)
	}
}
