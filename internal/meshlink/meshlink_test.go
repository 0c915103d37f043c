package meshlink

import (
	"crypto/tls"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCallerOfWithoutCertificate: a connection without a client
// certificate (plaintext, or TLS without one) has no caller, and no error.
// The verified certificates of mesh peers are tested where they are served
// (package mesh's Handler, package meshgrpc's server).
func TestCallerOfWithoutCertificate(t *testing.T) {
	for _, cs := range []*tls.ConnectionState{nil, {}} {
		if caller, err := CallerOf(cs); caller != "" || err != nil {
			t.Errorf("CallerOf(%v) = %q, %v; want no caller", cs, caller, err)
		}
	}
}
