package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

// badCertCase makes a certificate that breaks one X509-SVID rule. usage is
// the usage the verifier will ask for, so the key usage case can lack it.
type badCertCase struct {
	name   string
	mutate func(tmpl *x509.Certificate, usage x509.ExtKeyUsage)
	want   Reason // "" = accepted
}

func badCertCases() []badCertCase {
	return []badCertCase{
		{name: "valid", mutate: func(*x509.Certificate, x509.ExtKeyUsage) {}},
		{name: "two URI SANs", want: ReasonBadSAN, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.URIs = append(c.URIs, MustParseID("spiffe://mesh.local/svc/admin").url())
		}},
		{name: "DNS SAN but no URI SAN", want: ReasonBadSAN, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.URIs, c.DNSNames = nil, []string{"web.mesh.local"}
		}},
		{name: "URI SAN not SPIFFE", want: ReasonBadSAN, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.URIs = []*url.URL{{Scheme: "https", Host: "web.mesh.local"}}
		}},
		{name: "CA=true", want: ReasonIsCA, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.IsCA, c.KeyUsage = true, c.KeyUsage|x509.KeyUsageCertSign
		}},
		{name: "keyCertSign on a leaf", want: ReasonIsCA, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.KeyUsage |= x509.KeyUsageCertSign
		}},
		{name: "wrong trust domain", want: ReasonWrongTrustDomain, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.URIs = []*url.URL{MustParseID("spiffe://other.example/svc/web").url()}
		}},
		{name: "expired", want: ReasonExpired, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		}},
		{name: "not yet valid", want: ReasonNotYetValid, mutate: func(c *x509.Certificate, _ x509.ExtKeyUsage) {
			c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		}},
		{name: "key usage lacks the side", want: ReasonKeyUsage, mutate: func(c *x509.Certificate, usage x509.ExtKeyUsage) {
			other := x509.ExtKeyUsageServerAuth
			if usage == x509.ExtKeyUsageServerAuth {
				other = x509.ExtKeyUsageClientAuth
			}
			c.ExtKeyUsage = []x509.ExtKeyUsage{other}
		}},
	}
}

// TestBadCertificatesOverTLS presents each bad certificate in a real TLS
// handshake on loopback, once as a client to a server and once as a server to
// a client, and checks the refusing side's reason.
func TestBadCertificatesOverTLS(t *testing.T) {
	for _, side := range []string{"client presents", "server presents"} {
		for _, tc := range badCertCases() {
			t.Run(side+"/"+tc.name, func(t *testing.T) {
				ca := newTestCA(t)
				usage := x509.ExtKeyUsageClientAuth
				service := "web"
				if side == "server presents" {
					usage, service = x509.ExtKeyUsageServerAuth, "billing"
				}
				tmpl := leafTemplate(t, service, time.Now())
				tc.mutate(tmpl, usage)
				bad := NewStaticSource(rawIdentity(signedCert(t, ca, tmpl), ca))

				var serverSrc, clientSrc Source
				if side == "client presents" {
					serverSrc, clientSrc = mustSource(t, ca, "billing"), bad
				} else {
					serverSrc, clientSrc = bad, mustSource(t, ca, "web")
				}
				addr, results := startTLSServer(t, ServerConfig(serverSrc))
				_, clientErr := dialTLS(addr, ClientConfig(clientSrc, "billing"))
				res := recv(t, results, "server result")

				refuser := res.err
				if side == "server presents" {
					refuser = clientErr
				}
				if tc.want == "" {
					if clientErr != nil || res.err != nil {
						t.Fatalf("valid certificate refused: client %v, server %v", clientErr, res.err)
					}
					return
				}
				if clientErr == nil {
					t.Fatal("the client's connection worked")
				}
				wantReason(t, refuser, tc.want)
			})
		}
	}
}

func TestVerifyPeer(t *testing.T) {
	ca := newTestCA(t)
	self := mustCurrent(t, mustSource(t, ca, "billing"))
	web := mustCurrent(t, mustSource(t, ca, "web"))
	chain := []*x509.Certificate{web.Certificate.Leaf}
	now := time.Now()

	// An intermediate CA: the peer sends it in its chain.
	intKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	intTmpl := &x509.Certificate{
		SerialNumber: mustSerial(t), Subject: pkix.Name{CommonName: "intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	inter, err := ca.sign(intTmpl, intKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, leafTemplate(t, "web", now), inter, leafKey.Public(), intKey)
	if err != nil {
		t.Fatal(err)
	}
	viaInter, _ := x509.ParseCertificate(der)

	noPool := *self
	noPool.Pool = nil
	noRoots := noPool
	noRoots.Roots = nil

	tests := []struct {
		name  string
		chain []*x509.Certificate
		id    *Identity
		usage x509.ExtKeyUsage
		now   time.Time
		want  Reason
		peer  string
	}{
		{name: "valid", chain: chain, id: self, usage: x509.ExtKeyUsageClientAuth, now: now, peer: "spiffe://mesh.local/svc/web"},
		{name: "any usage", chain: chain, id: self, usage: x509.ExtKeyUsageAny, now: now, peer: "spiffe://mesh.local/svc/web"},
		{name: "through an intermediate", chain: []*x509.Certificate{viaInter, inter}, id: self, usage: x509.ExtKeyUsageClientAuth, now: now, peer: "spiffe://mesh.local/svc/web"},
		{name: "intermediate missing", chain: []*x509.Certificate{viaInter}, id: self, usage: x509.ExtKeyUsageClientAuth, now: now, want: ReasonUnknownAuthority},
		{name: "intermediate expired", chain: []*x509.Certificate{viaInter, inter}, id: self, usage: x509.ExtKeyUsageClientAuth, now: now.Add(90 * time.Minute), want: ReasonExpired},
		{name: "no chain", chain: nil, id: self, usage: x509.ExtKeyUsageClientAuth, now: now, want: ReasonNoCertificate},
		{name: "nil leaf", chain: []*x509.Certificate{nil}, id: self, usage: x509.ExtKeyUsageClientAuth, now: now, want: ReasonNoCertificate},
		{name: "no identity", chain: chain, id: nil, usage: x509.ExtKeyUsageClientAuth, now: now, want: ReasonNoIdentity},
		{name: "nil pool uses Roots, never the system roots", chain: chain, id: &noPool, usage: x509.ExtKeyUsageClientAuth, now: now, peer: "spiffe://mesh.local/svc/web"},
		{name: "no pool and no roots", chain: chain, id: &noRoots, usage: x509.ExtKeyUsageClientAuth, now: now, want: ReasonNoIdentity},
		{name: "expired at now", chain: chain, id: self, usage: x509.ExtKeyUsageClientAuth, now: now.Add(48 * time.Hour), want: ReasonExpired},
		{name: "not yet valid at now", chain: chain, id: self, usage: x509.ExtKeyUsageClientAuth, now: now.Add(-time.Hour), want: ReasonNotYetValid},
		{name: "another CA", chain: []*x509.Certificate{mustCurrent(t, mustSource(t, newTestCA(t), "web")).Certificate.Leaf}, id: self, usage: x509.ExtKeyUsageClientAuth, now: now, want: ReasonUnknownAuthority},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyPeer(tt.chain, tt.id, tt.usage, tt.now)
			if tt.want != "" {
				wantReason(t, err, tt.want)
				if !got.IsZero() {
					t.Errorf("refused peer returned ID %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("VerifyPeer: %v", err)
			}
			if got.String() != tt.peer {
				t.Errorf("peer %v, want %s", got, tt.peer)
			}
		})
	}
}

func mustSerial(t testing.TB) *big.Int {
	t.Helper()
	s, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyErrorText(t *testing.T) {
	tests := []struct {
		err  *VerifyError
		want string
	}{
		{&VerifyError{Reason: ReasonWrongService, Peer: "spiffe://mesh.local/svc/evil", Err: errors.New("want billing")},
			"identity: peer spiffe://mesh.local/svc/evil: wrong service: want billing"},
		{&VerifyError{Reason: ReasonNoCertificate}, "identity: no certificate"},
		{&VerifyError{Reason: ReasonNoIdentity, Err: ErrNoIdentity}, "identity: no identity: identity: no identity available"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	wrapped := errors.Join(errors.New("x"), tests[0].err)
	if ReasonOf(wrapped) != ReasonWrongService || ReasonOf(errors.New("x")) != "" || ReasonOf(nil) != "" {
		t.Error("ReasonOf wrong")
	}
	if !errors.Is(tests[2].err, ErrNoIdentity) {
		t.Error("VerifyError does not unwrap")
	}
}

func TestVerifyErrorPeerNamesSubject(t *testing.T) {
	ca := newTestCA(t)
	self := mustCurrent(t, mustSource(t, ca, "billing"))
	tmpl := leafTemplate(t, "web", time.Now())
	tmpl.URIs = nil
	tmpl.Subject = pkix.Name{CommonName: "legacy-web"}
	cert := signedCert(t, ca, tmpl)
	_, err := VerifyPeer([]*x509.Certificate{cert.Leaf}, self, x509.ExtKeyUsageClientAuth, time.Now())
	if err == nil || !strings.Contains(err.Error(), "peer CN=legacy-web: bad SAN: 0 URI SANs") {
		t.Errorf("err = %v", err)
	}
}

func TestNewIdentity(t *testing.T) {
	ca := newTestCA(t)
	good, err := ca.Issue(MustParseID("spiffe://mesh.local/svc/web"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ca.Issue(MustParseID("spiffe://mesh.local/svc/x"), time.Hour)
	noLeaf := *good
	noLeaf.Leaf = nil
	mismatched := *good
	mismatched.PrivateKey = other.PrivateKey
	noKey := *good
	noKey.PrivateKey = nil
	twoSANs := func() *tls.Certificate {
		tmpl := leafTemplate(t, "web", time.Now())
		tmpl.URIs = append(tmpl.URIs, tmpl.URIs[0])
		return signedCert(t, ca, tmpl)
	}()
	isCA := func() *tls.Certificate {
		tmpl := leafTemplate(t, "web", time.Now())
		tmpl.IsCA = true
		return signedCert(t, ca, tmpl)
	}()
	tests := []struct {
		name    string
		cert    *tls.Certificate
		roots   []*x509.Certificate
		wantErr string
	}{
		{name: "valid", cert: good, roots: ca.Roots()},
		{name: "leaf parsed when nil", cert: &noLeaf, roots: ca.Roots()},
		{name: "nil", cert: nil, roots: ca.Roots(), wantErr: "no certificate"},
		{name: "empty", cert: &tls.Certificate{}, roots: ca.Roots(), wantErr: "no certificate"},
		{name: "no key", cert: &noKey, roots: ca.Roots(), wantErr: "no private key"},
		{name: "key mismatch", cert: &mismatched, roots: ca.Roots(), wantErr: "does not match"},
		{name: "two SANs", cert: twoSANs, roots: ca.Roots(), wantErr: "2 URI SANs"},
		{name: "CA", cert: isCA, roots: ca.Roots(), wantErr: "CA certificate"},
		{name: "no roots", cert: good, roots: nil, wantErr: "no trust roots"},
		{name: "nil root", cert: good, roots: []*x509.Certificate{nil}, wantErr: "nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewIdentity(tt.cert, tt.roots)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "identity: ") {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.ID.String() != "spiffe://mesh.local/svc/web" || id.TrustDomain != testTD || id.Pool == nil ||
				id.Certificate.Leaf == nil || len(id.Roots) != 1 {
				t.Errorf("identity %+v", id)
			}
		})
	}
	var nilID *Identity
	if !nilID.NotAfter().IsZero() || nilID.Serial() != "" {
		t.Error("nil Identity methods")
	}
}

func TestStaticSource(t *testing.T) {
	if _, err := NewStaticSource(nil).Current(); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("nil static source: %v", err)
	}
	ca := newTestCA(t)
	id := mustCurrent(t, mustSource(t, ca, "web"))
	src := NewStaticSource(id)
	if got := mustCurrent(t, src); got != id {
		t.Error("static source changed its identity")
	}
	if isClosed(src.Changed()) {
		t.Error("static source's Changed is closed")
	}
}
