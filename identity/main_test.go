package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTD = "mesh.local"

// waitLimit bounds every wait of the tests for something that should happen
// at once; it is a failsafe, never a timing assumption.
const waitLimit = 10 * time.Second

func newTestCA(t testing.TB, opts ...CAOption) *DevCA {
	t.Helper()
	ca, err := NewDevCA(testTD, opts...)
	if err != nil {
		t.Fatalf("NewDevCA: %v", err)
	}
	return ca
}

func mustSource(t testing.TB, ca *DevCA, service string) Source {
	t.Helper()
	src, err := ca.NewSource(service)
	if err != nil {
		t.Fatalf("Source(%q): %v", service, err)
	}
	return src
}

func mustCurrent(t testing.TB, src Source) *Identity {
	t.Helper()
	id, err := src.Current()
	if err != nil {
		t.Fatalf("Current: %v", err)
	}
	return id
}

func svcID(t testing.TB, service string) ID {
	t.Helper()
	id, err := NewServiceID(testTD, service)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// leafTemplate is a valid leaf template for spiffe://mesh.local/svc/<service>.
func leafTemplate(t testing.TB, service string, now time.Time) *x509.Certificate {
	t.Helper()
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: service},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{svcID(t, service).url()},
	}
}

// signedCert signs tmpl with the CA's current root and a new key.
func signedCert(t testing.TB, ca *DevCA, tmpl *x509.Certificate) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.sign(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// rawIdentity builds an Identity without NewIdentity's checks, to present
// certificates that NewIdentity would refuse.
func rawIdentity(cert *tls.Certificate, ca *DevCA) *Identity {
	st := ca.state.Load()
	id, _ := leafID(cert.Leaf)
	if id.IsZero() {
		id = MustParseID("spiffe://" + testTD + "/svc/unnamed")
	}
	return &Identity{ID: id, Certificate: cert, TrustDomain: testTD, Roots: st.certs, Pool: st.pool}
}

// serverResult is what a test server saw of one connection.
type serverResult struct {
	state tls.ConnectionState
	err   error
}

// startTLSServer serves TLS on 127.0.0.1 with cfg until the test ends: each
// connection is handshaken, reported on the returned channel (when there is
// room), answered with one byte and closed.
func startTLSServer(t testing.TB, cfg *tls.Config) (string, <-chan serverResult) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan serverResult, 256)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(waitLimit))
				err := tc.HandshakeContext(ctx)
				if err == nil {
					_, err = tc.Write([]byte{'k'})
				}
				select {
				case results <- serverResult{state: tc.ConnectionState(), err: err}:
				default:
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), results
}

// dialTLS connects to addr, completes the handshake and reads the server's
// byte, which also proves that the server accepted us (in TLS 1.3 the client
// finishes its handshake before the server has checked its certificate).
func dialTLS(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: waitLimit}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	_ = tc.SetDeadline(time.Now().Add(waitLimit))
	var b [1]byte
	_, err = io.ReadFull(tc, b[:])
	return tc.ConnectionState(), err
}

func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %v", what, waitLimit)
		var zero T
		return zero
	}
}

func wantReason(t testing.TB, err error, want Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want reason %q", want)
	}
	if got := ReasonOf(err); got != want {
		t.Fatalf("reason of %v = %q, want %q", err, got, want)
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("%v is not a *VerifyError", err)
	}
}

// logSink is a slog.Handler that passes records to a channel.
type logSink struct{ ch chan slog.Record }

func newLogSink() *logSink { return &logSink{ch: make(chan slog.Record, 256)} }

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	select {
	case s.ch <- r.Clone():
	default:
	}
	return nil
}
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *logSink) WithGroup(string) slog.Handler      { return s }

// waitLog waits for a record whose message is msg.
func (s *logSink) waitLog(t testing.TB, msg string) slog.Record {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case r := <-s.ch:
			if r.Message == msg {
				return r
			}
		case <-deadline:
			t.Fatalf("no log %q within %v", msg, waitLimit)
		}
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
