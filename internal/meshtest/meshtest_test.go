package meshtest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestHeaderErrorIsMesh's: meshtest spells mesh's header itself, since it
// cannot import mesh.
func TestHeaderErrorIsMesh(t *testing.T) {
	if meshtest.HeaderError != mesh.HeaderError {
		t.Fatalf("meshtest.HeaderError %q, mesh.HeaderError %q", meshtest.HeaderError, mesh.HeaderError)
	}
}
