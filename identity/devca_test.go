package identity

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

var epoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestNewDevCARoot(t *testing.T) {
	fake := clocktest.NewFake(epoch)
	ca := newTestCA(t, WithClock(fake))
	roots := ca.Roots()
	if len(roots) != 1 {
		t.Fatalf("%d roots, want 1", len(roots))
	}
	r := roots[0]
	if !r.IsCA || !r.BasicConstraintsValid || r.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("root is not a CA: IsCA=%v usage=%v", r.IsCA, r.KeyUsage)
	}
	if err := r.CheckSignatureFrom(r); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if r.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("root key %v, want ECDSA", r.PublicKeyAlgorithm)
	}
	if len(r.URIs) != 1 || r.URIs[0].String() != "spiffe://mesh.local" {
		t.Errorf("root URIs %v, want spiffe://mesh.local", r.URIs)
	}
	if life := r.NotAfter.Sub(epoch); life < 9*365*24*time.Hour {
		t.Errorf("root valid for %v, want about ten years", life)
	}
	if ca.TrustDomain() != testTD {
		t.Errorf("TrustDomain() = %q", ca.TrustDomain())
	}
	if _, err := NewDevCA("Bad TD"); err == nil {
		t.Error("NewDevCA accepted an invalid trust domain")
	}
}

func TestDevCASourceLeaf(t *testing.T) {
	fake := clocktest.NewFake(epoch)
	ca := newTestCA(t, WithClock(fake))
	id := mustCurrent(t, mustSource(t, ca, "billing"))
	leaf := id.Certificate.Leaf
	checks := []struct {
		name string
		ok   bool
	}{
		{"ID", id.ID.String() == "spiffe://mesh.local/svc/billing"},
		{"TrustDomain", id.TrustDomain == testTD},
		{"one URI SAN", len(leaf.URIs) == 1 && leaf.URIs[0].String() == "spiffe://mesh.local/svc/billing"},
		{"ECDSA", leaf.PublicKeyAlgorithm == x509.ECDSA},
		{"not CA", !leaf.IsCA && leaf.BasicConstraintsValid},
		{"KeyUsage", leaf.KeyUsage == x509.KeyUsageDigitalSignature},
		{"ExtKeyUsage", len(leaf.ExtKeyUsage) == 2 && leaf.ExtKeyUsage[0] == x509.ExtKeyUsageServerAuth && leaf.ExtKeyUsage[1] == x509.ExtKeyUsageClientAuth},
		{"NotBefore", leaf.NotBefore.Equal(epoch.Add(-time.Minute))},
		{"NotAfter", leaf.NotAfter.Equal(epoch.Add(DefaultLeafTTL)) && id.NotAfter().Equal(leaf.NotAfter)},
		{"Serial", id.Serial() == leaf.SerialNumber.Text(16) && id.Serial() != ""},
		{"PrivateKey", id.Certificate.PrivateKey != nil},
		{"Roots", len(id.Roots) == 1 && id.Roots[0].Equal(ca.Roots()[0])},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("leaf: %s wrong", c.name)
		}
	}
	if _, err := VerifyPeer([]*x509.Certificate{leaf}, id, x509.ExtKeyUsageClientAuth, epoch); err != nil {
		t.Errorf("own leaf does not verify: %v", err)
	}
	if _, err := ca.Source("bad/name").Current(); err == nil || !errors.Is(err, ErrNoIdentity) {
		t.Error("a source for a bad service name has an identity")
	}
	if _, err := ca.NewSource("bad/name"); err == nil {
		t.Error("Source accepted an invalid service name")
	}
}

// TestDevCARenewalWindow checks that each source renews at a random point
// between 60% and 90% of its leaf's lifetime, lazily in Current, and fires
// Changed when it does.
func TestDevCARenewalWindow(t *testing.T) {
	fake := clocktest.NewFake(epoch)
	const ttl = 100 * time.Hour // one step = 1% of the lifetime
	ca := newTestCA(t, WithClock(fake), WithLeafTTL(ttl))
	const n = 20
	type tracked struct {
		src     Source
		serial  string
		changed <-chan struct{}
		renewed int // percent of the lifetime at which it renewed; 0 = not yet
	}
	srcs := make([]*tracked, n)
	for i := range srcs {
		src := mustSource(t, ca, "svc")
		srcs[i] = &tracked{src: src, changed: src.Changed(), serial: mustCurrent(t, src).Serial()}
	}
	for pct := 1; pct <= 100; pct++ {
		fake.Advance(time.Hour)
		for i, s := range srcs {
			if s.renewed != 0 {
				continue
			}
			id := mustCurrent(t, s.src)
			fired := isClosed(s.changed)
			if id.Serial() == s.serial {
				if fired {
					t.Fatalf("source %d: Changed fired at %d%% without a new leaf", i, pct)
				}
				continue
			}
			if !fired {
				t.Errorf("source %d: renewed at %d%% but Changed did not fire", i, pct)
			}
			s.renewed = pct
			if got := id.Certificate.Leaf.NotBefore; !got.Equal(fake.Now().Add(-time.Minute)) {
				t.Errorf("source %d: renewed leaf NotBefore %v, want now-1m", i, got)
			}
		}
	}
	distinct := map[int]bool{}
	for i, s := range srcs {
		if s.renewed < 60 || s.renewed > 90 {
			t.Errorf("source %d renewed at %d%% of its lifetime, want 60..90", i, s.renewed)
		}
		distinct[s.renewed] = true
	}
	if len(distinct) < 3 {
		t.Errorf("renewal points %v are not spread out", distinct)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestDevCAConcurrentRenewalIssuesOnce(t *testing.T) {
	fake := clocktest.NewFake(epoch)
	ca := newTestCA(t, WithClock(fake))
	src := mustSource(t, ca, "billing")
	first := mustCurrent(t, src).Serial()
	fake.Advance(DefaultLeafTTL * 95 / 100)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		serials = map[string]bool{}
	)
	for range 16 {
		wg.Go(func() {
			id, err := src.Current()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			serials[id.Serial()] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(serials) != 1 || serials[first] {
		t.Errorf("concurrent renewals gave serials %v (first %s), want one new serial", serials, first)
	}
}

func TestDevCAIssue(t *testing.T) {
	fake := clocktest.NewFake(epoch)
	ca := newTestCA(t, WithClock(fake))
	cert, err := ca.Issue(MustParseID("spiffe://mesh.local/ns/default/dc/dc1/svc/web"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Leaf.NotAfter; !got.Equal(epoch.Add(time.Hour)) {
		t.Errorf("NotAfter %v, want +1h", got)
	}
	id, err := NewIdentity(cert, ca.Roots())
	if err != nil {
		t.Fatal(err)
	}
	if svc, _ := id.ID.Service(); svc != "web" {
		t.Errorf("Service() = %q", svc)
	}
	if cert, err := ca.Issue(MustParseID("spiffe://mesh.local/x"), 0); err != nil || !cert.Leaf.NotAfter.Equal(epoch.Add(DefaultLeafTTL)) {
		t.Errorf("Issue with ttl 0: %v, want the default lifetime", err)
	}
	if _, err := ca.Issue(ID{}, time.Hour); err == nil {
		t.Error("Issue accepted the zero ID")
	}
	// A leaf never outlives its root.
	long, err := ca.Issue(MustParseID("spiffe://mesh.local/x"), 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if root := ca.Roots()[0]; long.Leaf.NotAfter.After(root.NotAfter) {
		t.Errorf("leaf NotAfter %v beyond the root's %v", long.Leaf.NotAfter, root.NotAfter)
	}
}

func TestDevCARotateAndDropRoot(t *testing.T) {
	ca := newTestCA(t)
	src := mustSource(t, ca, "billing")
	before := mustCurrent(t, src)
	oldRoot := ca.Roots()[0]
	ch := src.Changed()
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	if !isClosed(ch) {
		t.Error("Rotate did not fire Changed")
	}
	after := mustCurrent(t, src)
	roots := ca.Roots()
	if len(roots) != 2 || !roots[0].Equal(oldRoot) || len(after.Roots) != 2 {
		t.Fatalf("after Rotate: %d roots (identity %d), want 2 with the old one first", len(roots), len(after.Roots))
	}
	if after.Serial() == before.Serial() {
		t.Error("Rotate kept the old leaf")
	}
	if err := after.Certificate.Leaf.CheckSignatureFrom(roots[1]); err != nil {
		t.Errorf("new leaf not signed by the new root: %v", err)
	}
	// Cross-rotation: the old leaf still verifies under the new bundle.
	if _, err := VerifyPeer([]*x509.Certificate{before.Certificate.Leaf}, after, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
		t.Errorf("old leaf refused after Rotate: %v", err)
	}

	if err := ca.DropRoot(serialOf(roots[1])); err == nil || !strings.Contains(err.Error(), "Rotate first") {
		t.Errorf("dropping the signing root: %v", err)
	}
	if err := ca.DropRoot("abc"); err == nil {
		t.Error("dropping an unknown root succeeded")
	}
	ch = src.Changed()
	if err := ca.DropRoot(serialOf(oldRoot)); err != nil {
		t.Fatal(err)
	}
	if !isClosed(ch) {
		t.Error("DropRoot did not fire Changed")
	}
	dropped := mustCurrent(t, src)
	if len(dropped.Roots) != 1 || !dropped.Roots[0].Equal(roots[1]) || len(ca.Roots()) != 1 {
		t.Errorf("after DropRoot: %d roots", len(dropped.Roots))
	}
	if dropped.Serial() != after.Serial() {
		t.Error("DropRoot replaced a leaf of the kept root")
	}
	_, err := VerifyPeer([]*x509.Certificate{before.Certificate.Leaf}, dropped, x509.ExtKeyUsageClientAuth, time.Now())
	wantReason(t, err, ReasonUnknownAuthority)
}

func TestLoadOrCreateDevCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca1, err := LoadOrCreateDevCA(dir, testTD)
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadOrCreateDevCA(dir, testTD)
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Roots()[0].Equal(ca2.Roots()[0]) {
		t.Fatal("two loads of one dir gave different CAs")
	}
	// Leaves of one verify under the other.
	id1 := mustCurrent(t, mustSource(t, ca1, "web"))
	id2 := mustCurrent(t, mustSource(t, ca2, "billing"))
	if _, err := VerifyPeer([]*x509.Certificate{id1.Certificate.Leaf}, id2, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
		t.Errorf("leaf of the first load refused by the second: %v", err)
	}
	if runtime.GOOS != "windows" {
		for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644, "": 0o700} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s mode %v, want %v", filepath.Join(dir, name), got, want)
			}
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("dir holds %d entries, want ca.pem and ca-key.pem only", len(ents))
	}

	// ca.pem is restored from ca-key.pem.
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	ca3, err := LoadOrCreateDevCA(dir, testTD)
	if err != nil || !ca3.Roots()[0].Equal(ca1.Roots()[0]) {
		t.Fatalf("reload without ca.pem: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CACertFile)); err != nil {
		t.Errorf("ca.pem not restored: %v", err)
	}

	// Another trust domain is an error naming both.
	_, err = LoadOrCreateDevCA(dir, "other.local")
	if err == nil || !strings.Contains(err.Error(), `"mesh.local"`) || !strings.Contains(err.Error(), `"other.local"`) {
		t.Errorf("other trust domain: %v", err)
	}
}

func TestLoadOrCreateDevCAConcurrent(t *testing.T) {
	for round := range 5 {
		dir := filepath.Join(t.TempDir(), "ca")
		const n = 8
		cas := make([]*DevCA, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				cas[i], errs[i] = LoadOrCreateDevCA(dir, testTD)
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d, creator %d: %v", round, i, errs[i])
			}
			if !cas[i].Roots()[0].Equal(cas[0].Roots()[0]) {
				t.Fatalf("round %d: creators %d and 0 disagree on the CA", round, i)
			}
		}
		onDisk, err := LoadOrCreateDevCA(dir, testTD)
		if err != nil || !onDisk.Roots()[0].Equal(cas[0].Roots()[0]) {
			t.Fatalf("round %d: the CA on disk differs from the one the creators use (%v)", round, err)
		}
	}
}

func TestLoadOrCreateDevCABadFiles(t *testing.T) {
	other := newTestCA(t)
	otherKey, err := x509.MarshalPKCS8PrivateKey(other.state.Load().signer.key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     string // content of ca-key.pem
		cert    string // content of ca.pem; "-" for none
		wantErr string
	}{
		{name: "garbage key", key: "junk", cert: "-", wantErr: "ca-key.pem: no PEM private key"},
		{name: "key without cert", key: string(pemBlock("PRIVATE KEY", otherKey)), cert: "-", wantErr: "ca.pem"},
		{name: "garbage cert", key: string(pemBlock("PRIVATE KEY", otherKey)), cert: "junk", wantErr: "ca.pem: no PEM certificate"},
		{name: "key not matching", key: string(pemBlock("PRIVATE KEY", otherKey)), cert: string(pemCert(newTestCA(t).Roots()[0].Raw)), wantErr: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, CAKeyFile), []byte(tt.key), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.cert != "-" {
				if err := os.WriteFile(filepath.Join(dir, CACertFile), []byte(tt.cert), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadOrCreateDevCA(dir, testTD)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	// A CA made elsewhere (key and cert in separate files) loads.
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, CAKeyFile), pemBlock("PRIVATE KEY", otherKey), 0o600)
	_ = os.WriteFile(filepath.Join(dir, CACertFile), pemCert(other.Roots()[0].Raw), 0o644)
	ca, err := LoadOrCreateDevCA(dir, testTD)
	if err != nil || !ca.Roots()[0].Equal(other.Roots()[0]) {
		t.Errorf("loading a separate key and cert: %v", err)
	}
	certOnly := t.TempDir()
	_ = os.WriteFile(filepath.Join(certOnly, CACertFile), pemCert(other.Roots()[0].Raw), 0o644)
	if _, err := LoadOrCreateDevCA(certOnly, testTD); err == nil || !strings.Contains(err.Error(), "exists without ca-key.pem") {
		t.Errorf("ca.pem without a key: %v", err)
	}
	if _, err := LoadOrCreateDevCA(filepath.Join(dir, CAKeyFile, "sub"), testTD); err == nil {
		t.Error("a dir under a file was accepted")
	}
	if _, err := LoadOrCreateDevCA(t.TempDir(), "UPPER"); err == nil {
		t.Error("an invalid trust domain was accepted")
	}
	var pathErr *os.PathError
	_, err = LoadOrCreateDevCA(filepath.Join(dir, CAKeyFile, "sub"), testTD)
	if !errors.As(err, &pathErr) {
		t.Errorf("err %v does not carry the path error", err)
	}
}

// TestRotateNeverOutrunsTrust: while roots rotate and old ones are dropped,
// a leaf a source hands out is always trusted by every source asked
// afterwards (as in a handshake: the peer's leaf first, then our roots).
func TestRotateNeverOutrunsTrust(t *testing.T) {
	ca := newTestCA(t)
	a, b := mustSource(t, ca, "a"), mustSource(t, ca, "b")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var checks atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				peer := mustCurrent(t, a).Certificate.Leaf
				self := mustCurrent(t, b)
				if _, err := VerifyPeer([]*x509.Certificate{peer}, self, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
					if mustCurrent(t, a).Certificate.Leaf != peer {
						// a replaced the leaf of a root being dropped
						// between the two reads: a handshake that
						// straddles a drop fails and is retried.
						continue
					}
					t.Errorf("leaf %s refused by a bundle of %d roots: %v", serialOf(peer), len(self.Roots), err)
					return
				}
				checks.Add(1)
			}
		})
	}
	for range 10 {
		if err := ca.Rotate(); err != nil {
			t.Fatal(err)
		}
		if roots := ca.Roots(); len(roots) > 2 {
			if err := ca.DropRoot(serialOf(roots[0])); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d checks", checks.Load())
}
