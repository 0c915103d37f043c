package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/atomicfile"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

// quiet keeps the sources' logs out of the test output.
var quiet = WithLogger(slog.New(slog.DiscardHandler))

// pemSet is the PEM content of a certificate, its key and roots.
type pemSet struct{ cert, key, roots []byte }

func pemOf(t testing.TB, cert *tls.Certificate, roots []*x509.Certificate) pemSet {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var s pemSet
	for _, der := range cert.Certificate {
		s.cert = append(s.cert, pemCert(der)...)
	}
	s.key = pemBlock("PRIVATE KEY", keyDER)
	for _, r := range roots {
		s.roots = append(s.roots, pemCert(r.Raw)...)
	}
	return s
}

// certDir is a directory holding cert.pem, key.pem and roots.pem.
type certDir struct {
	t   testing.TB
	dir string
}

func (d certDir) path(name string) string { return filepath.Join(d.dir, name) }

// write writes the set the way editors do: a temporary file renamed over the
// old one, key first.
func (d certDir) write(s pemSet) {
	d.t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{"key.pem", s.key}, {"cert.pem", s.cert}, {"roots.pem", s.roots}} {
		if err := atomicfile.Write(filepath.Join(d.dir, f.name), f.data, 0o600); err != nil {
			d.t.Fatal(err)
		}
	}
}

// writeInPlace truncates and rewrites each file.
func (d certDir) writeInPlace(s pemSet) {
	d.t.Helper()
	for name, data := range map[string][]byte{"key.pem": s.key, "cert.pem": s.cert, "roots.pem": s.roots} {
		if err := os.WriteFile(d.path(name), data, 0o600); err != nil {
			d.t.Fatal(err)
		}
	}
}

func newFileFixture(t *testing.T, opts ...FileOption) (*DevCA, certDir, *FileSource) {
	t.Helper()
	ca := newTestCA(t)
	d := certDir{t: t, dir: t.TempDir()}
	d.write(pemOf(t, mustIssue(t, ca, "spiffe://mesh.local/svc/web"), ca.Roots()))
	opts = append([]FileOption{quiet}, opts...)
	src, err := NewFileSource(d.path("cert.pem"), d.path("key.pem"), d.path("roots.pem"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return ca, d, src
}

func TestFileSourceLoads(t *testing.T) {
	ca, _, src := newFileFixture(t)
	id := mustCurrent(t, src)
	if id.ID.String() != "spiffe://mesh.local/svc/web" || id.TrustDomain != testTD || len(id.Roots) != 1 || !id.Roots[0].Equal(ca.Roots()[0]) {
		t.Errorf("identity %v in %s with %d roots", id.ID, id.TrustDomain, len(id.Roots))
	}
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := src.Current(); err != nil {
		t.Errorf("Current after Close: %v", err)
	}
}

func TestFileSourceFirstLoadErrors(t *testing.T) {
	ca := newTestCA(t)
	good := pemOf(t, mustIssue(t, ca, "spiffe://mesh.local/svc/web"), ca.Roots())
	other := pemOf(t, mustIssue(t, ca, "spiffe://mesh.local/svc/other"), ca.Roots())
	tmpl := leafTemplate(t, "web", time.Now())
	tmpl.URIs, tmpl.DNSNames = nil, []string{"web"}
	noURI := pemOf(t, signedCert(t, ca, tmpl), ca.Roots())

	tests := []struct {
		name    string
		set     pemSet
		missing string // file not written
		want    []string
	}{
		{name: "missing cert", set: good, missing: "cert.pem", want: []string{"cert.pem", "no such file"}},
		{name: "garbage cert", set: pemSet{[]byte("junk"), good.key, good.roots}, want: []string{"cert.pem", "no PEM certificate"}},
		{name: "garbage key", set: pemSet{good.cert, []byte("junk"), good.roots}, want: []string{"key.pem", "no PEM private key"}},
		{name: "empty roots", set: pemSet{good.cert, good.key, nil}, want: []string{"roots.pem", "no PEM certificate"}},
		{name: "key of another certificate", set: pemSet{good.cert, other.key, good.roots}, want: []string{"key.pem", "cert.pem", "does not match"}},
		{name: "no URI SAN", set: noURI, want: []string{"cert.pem", "0 URI SANs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := certDir{t: t, dir: t.TempDir()}
			d.write(tt.set)
			if tt.missing != "" {
				os.Remove(d.path(tt.missing))
			}
			src, err := NewFileSource(d.path("cert.pem"), d.path("key.pem"), d.path("roots.pem"))
			if err == nil {
				src.Close()
				t.Fatal("NewFileSource succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestFileSourceCombinedCertAndKey(t *testing.T) {
	ca := newTestCA(t)
	s := pemOf(t, mustIssue(t, ca, "spiffe://mesh.local/svc/web"), ca.Roots())
	dir := t.TempDir()
	combined := filepath.Join(dir, "tls.pem")
	if err := os.WriteFile(combined, append(s.cert, s.key...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "roots.pem"), s.roots, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := NewFileSource(combined, combined, filepath.Join(dir, "roots.pem"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if mustCurrent(t, src).ID.String() != "spiffe://mesh.local/svc/web" {
		t.Error("wrong ID")
	}
}

func TestFileSourceReloads(t *testing.T) {
	tests := []struct {
		name  string
		write func(d certDir, s pemSet)
	}{
		{name: "rename", write: certDir.write},
		{name: "in place", write: certDir.writeInPlace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, d, src := newFileFixture(t)
			before := mustCurrent(t, src)
			for round := range 3 {
				ch := src.Changed()
				next := mustIssue(t, ca, "spiffe://mesh.local/svc/web")
				tt.write(d, pemOf(t, next, ca.Roots()))
				recv(t, ch, "Changed")
				got := mustCurrent(t, src)
				if got.Serial() != serialOf(next.Leaf) || got.Serial() == before.Serial() {
					t.Fatalf("round %d: serial %s, want %s", round, got.Serial(), serialOf(next.Leaf))
				}
				before = got
			}
		})
	}
}

// TestFileSourceSymlinkSwap follows the Kubernetes secret volume layout:
// dir/cert.pem -> ..data/cert.pem, ..data -> ..<timestamp>, swapped by
// renaming a new ..data link over the old one.
func TestFileSourceSymlinkSwap(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	version := 0
	publish := func(s pemSet) {
		version++
		ts := filepath.Join(dir, "..v"+string(rune('0'+version)))
		if err := os.Mkdir(ts, 0o700); err != nil {
			t.Fatal(err)
		}
		certDir{t: t, dir: ts}.write(s)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish(pemOf(t, mustIssue(t, ca, "spiffe://mesh.local/svc/web"), ca.Roots()))
	for _, name := range []string{"cert.pem", "key.pem", "roots.pem"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	src, err := NewFileSource(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "roots.pem"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// A root rotation arrives as one swap: new leaf, both roots.
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	ch := src.Changed()
	next := mustIssue(t, ca, "spiffe://mesh.local/svc/web")
	publish(pemOf(t, next, ca.Roots()))
	recv(t, ch, "Changed")
	got := mustCurrent(t, src)
	if got.Serial() != serialOf(next.Leaf) || len(got.Roots) != 2 {
		t.Errorf("after the swap: serial %s with %d roots, want %s with 2", got.Serial(), len(got.Roots), serialOf(next.Leaf))
	}
}

func TestFileSourceKeepsLastGood(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	tmpl := leafTemplate(t, "web", time.Now())
	tmpl.URIs = nil
	noURI := signedCert(t, ca, tmpl)
	tests := []struct {
		name string
		bad  func(good pemSet) pemSet
		want string // in the logged error
	}{
		{name: "unparsable cert", bad: func(g pemSet) pemSet {
			g.cert = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
			return g
		}, want: "cert.pem"},
		{name: "key not matching", bad: func(g pemSet) pemSet {
			g.key = pemOf(t, mustIssue(t, ca, "spiffe://mesh.local/svc/x"), nil).key
			return g
		}, want: "does not match"},
		{name: "no URI SAN", bad: func(g pemSet) pemSet { return pemOf(t, noURI, ca.Roots()) }, want: "0 URI SANs"},
		{name: "empty roots", bad: func(g pemSet) pemSet { g.roots = nil; return g }, want: "roots.pem"},
		{name: "CA certificate as leaf", bad: func(g pemSet) pemSet {
			tmpl := leafTemplate(t, "web", time.Now())
			tmpl.IsCA = true
			return pemOf(t, signedCert(t, other, tmpl), ca.Roots())
		}, want: "CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := newLogSink()
			d := certDir{t: t, dir: t.TempDir()}
			good := pemOf(t, mustIssue(t, ca, "spiffe://mesh.local/svc/web"), ca.Roots())
			d.write(good)
			src, err := NewFileSource(d.path("cert.pem"), d.path("key.pem"), d.path("roots.pem"), WithLogger(slog.New(logs)))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			before := mustCurrent(t, src)
			ch := src.Changed()

			d.write(tt.bad(good))
			r := logs.waitLog(t, "identity: rejected new certificate files; keeping the last good identity")
			if r.Level != slog.LevelWarn {
				t.Errorf("logged at %v, want warning", r.Level)
			}
			var logged string
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "error" {
					logged = a.Value.String()
				}
				return true
			})
			if !strings.Contains(logged, tt.want) {
				t.Errorf("logged error %q does not say %q", logged, tt.want)
			}
			if got := mustCurrent(t, src); got != before {
				t.Errorf("identity replaced by a bad set: %s", got.Serial())
			}
			if isClosed(ch) {
				t.Error("Changed fired for a bad set")
			}
			// A good set afterwards is taken.
			next := mustIssue(t, ca, "spiffe://mesh.local/svc/web")
			d.write(pemOf(t, next, ca.Roots()))
			recv(t, ch, "Changed")
			if got := mustCurrent(t, src); got.Serial() != serialOf(next.Leaf) {
				t.Errorf("serial %s after a good set, want %s", got.Serial(), serialOf(next.Leaf))
			}
		})
	}
}

// TestFileSourcePeriodicReread checks the backstop alone (fsnotify off) with
// a fake clock, and expiry.
func TestFileSourcePeriodicReread(t *testing.T) {
	fake := clocktest.NewFake(time.Now())
	ca, d, src := newFileFixture(t, WithClock(fake), WithRefreshInterval(time.Minute), noWatchOption{})
	ch := src.Changed()
	next, err := ca.Issue(MustParseID("spiffe://mesh.local/svc/web"), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d.write(pemOf(t, next, ca.Roots()))
	fake.BlockUntilTimers(1) // the source waits for its re-read
	if isClosed(ch) {
		t.Fatal("changed before the periodic re-read")
	}
	fake.Advance(time.Minute)
	recv(t, ch, "Changed")
	if got := mustCurrent(t, src); got.Serial() != serialOf(next.Leaf) {
		t.Errorf("serial %s, want %s", got.Serial(), serialOf(next.Leaf))
	}
	// Past the leaf's end, Current denies.
	fake.BlockUntilTimers(1)
	fake.Advance(3 * time.Hour)
	if _, err := src.Current(); !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Current after expiry: %v", err)
	}
}

func TestFileSourceTLS(t *testing.T) {
	ca, d, src := newFileFixture(t)
	addr, results := startTLSServer(t, ServerConfig(mustSource(t, ca, "billing")))
	cfg := ClientConfig(src, "billing")
	if _, err := dialTLS(addr, cfg); err != nil {
		t.Fatal(err)
	}
	if res := recv(t, results, "server result"); res.err != nil {
		t.Fatal(res.err)
	}
	// A rotated file is presented by the next handshake.
	ch := src.Changed()
	next := mustIssue(t, ca, "spiffe://mesh.local/svc/web")
	d.write(pemOf(t, next, ca.Roots()))
	recv(t, ch, "Changed")
	if _, err := dialTLS(addr, cfg); err != nil {
		t.Fatal(err)
	}
	res := recv(t, results, "server result")
	if res.err != nil || serialOf(res.state.PeerCertificates[0]) != serialOf(next.Leaf) {
		t.Errorf("server saw %v, want the new leaf", res.err)
	}
}
