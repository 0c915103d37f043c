package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

func TestMutualTLSAllowed(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			ca := newTestCA(t)
			addr, results := startTLSServer(t, ServerConfig(mustSource(t, ca, "billing")))
			cfg := ClientConfig(mustSource(t, ca, "web"), "billing")
			cfg.MaxVersion = version
			cs, err := dialTLS(addr, cfg)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			res := recv(t, results, "server result")
			if res.err != nil {
				t.Fatalf("server: %v", res.err)
			}
			if cs.Version != version || res.state.Version != version {
				t.Errorf("version %s/%s, want %s", tls.VersionName(cs.Version), tls.VersionName(res.state.Version), tls.VersionName(version))
			}
			server, err := PeerIDFromState(&cs)
			if err != nil || server.String() != "spiffe://mesh.local/svc/billing" {
				t.Errorf("client sees server %v, %v", server, err)
			}
			client, err := PeerIDFromState(&res.state)
			if err != nil || client.String() != "spiffe://mesh.local/svc/web" {
				t.Errorf("server sees client %v, %v", client, err)
			}
			if res.state.ServerName != "billing" {
				t.Errorf("SNI %q, want the service name", res.state.ServerName)
			}
		})
	}
}

func TestDefaultVersionIsTLS13(t *testing.T) {
	ca := newTestCA(t)
	addr, results := startTLSServer(t, ServerConfig(mustSource(t, ca, "billing")))
	cs, err := dialTLS(addr, ClientConfig(mustSource(t, ca, "web"), "billing"))
	if err != nil {
		t.Fatal(err)
	}
	recv(t, results, "server result")
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(cs.Version))
	}
}

func TestMutualTLSRefused(t *testing.T) {
	ca := newTestCA(t)
	otherCA := newTestCA(t) // same trust domain, another root
	tests := []struct {
		name       string
		server     Source
		client     func() *tls.Config
		serverWant Reason // reason of the server's refusal; "" when the client refuses or Go does
		clientWant Reason // reason of the client's refusal
		errText    string // text of the refusing side's error
	}{
		{
			// Its leaf is of the other CA; it trusts both, so the
			// refusal is the server's.
			name:   "client of another CA",
			server: mustSource(t, ca, "billing"),
			client: func() *tls.Config {
				id, err := NewIdentity(mustIssue(t, otherCA, "spiffe://mesh.local/svc/web"), append(ca.Roots(), otherCA.Roots()...))
				if err != nil {
					t.Fatal(err)
				}
				return ClientConfig(NewStaticSource(id), "billing")
			},
			serverWant: ReasonUnknownAuthority,
		},
		{
			name:       "client trusting only another CA",
			server:     mustSource(t, ca, "billing"),
			client:     func() *tls.Config { return ClientConfig(mustSource(t, otherCA, "web"), "billing") },
			clientWant: ReasonUnknownAuthority,
		},
		{
			name:       "server of another CA",
			server:     mustSource(t, otherCA, "billing"),
			client:     func() *tls.Config { return ClientConfig(mustSource(t, ca, "web"), "billing") },
			clientWant: ReasonUnknownAuthority,
		},
		{
			name:       "server presents another service's identity",
			server:     mustSource(t, ca, "evil"),
			client:     func() *tls.Config { return ClientConfig(mustSource(t, ca, "web"), "billing") },
			clientWant: ReasonWrongService,
			errText:    "identity: peer spiffe://mesh.local/svc/evil: wrong service: want billing",
		},
		{
			name:   "server of a Consul-form ID of another service",
			server: NewStaticSource(rawIdentity(mustIssue(t, ca, "spiffe://mesh.local/ns/default/dc/dc1/svc/other"), ca)),
			client: func() *tls.Config { return ClientConfig(mustSource(t, ca, "web"), "billing") },

			clientWant: ReasonWrongService,
		},
		{
			name:       "empty service name matches no server",
			server:     mustSource(t, ca, "billing"),
			client:     func() *tls.Config { return ClientConfig(mustSource(t, ca, "web"), "") },
			clientWant: ReasonWrongService,
		},
		{
			name:   "client without a certificate",
			server: mustSource(t, ca, "billing"),
			client: func() *tls.Config {
				cfg := ClientConfig(mustSource(t, ca, "web"), "billing")
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return &tls.Certificate{}, nil
				}
				return cfg
			},
			errText: "client didn't provide a certificate",
		},
		{
			name:   "client offering TLS 1.0 only",
			server: mustSource(t, ca, "billing"),
			client: func() *tls.Config {
				cfg := ClientConfig(mustSource(t, ca, "web"), "billing")
				cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
				return cfg
			},
			errText: "version",
		},
		{
			name:   "client offering TLS 1.1 only",
			server: mustSource(t, ca, "billing"),
			client: func() *tls.Config {
				cfg := ClientConfig(mustSource(t, ca, "web"), "billing")
				cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
				return cfg
			},
			errText: "version",
		},
		{
			name:       "client with a nil source",
			server:     mustSource(t, ca, "billing"),
			client:     func() *tls.Config { return ClientConfig(nil, "billing") },
			clientWant: ReasonNoIdentity,
		},
		{
			name:       "server with a nil source",
			server:     nil,
			client:     func() *tls.Config { return ClientConfig(mustSource(t, ca, "web"), "billing") },
			serverWant: ReasonNoIdentity,
		},
		{
			name:       "server whose source has no identity",
			server:     NewStaticSource(nil),
			client:     func() *tls.Config { return ClientConfig(mustSource(t, ca, "web"), "billing") },
			serverWant: ReasonNoIdentity,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, results := startTLSServer(t, ServerConfig(tt.server))
			_, clientErr := dialTLS(addr, tt.client())
			if clientErr == nil {
				t.Fatal("the connection worked")
			}
			res := recv(t, results, "server result")
			if res.err == nil {
				t.Fatal("the server's handshake worked")
			}
			switch {
			case tt.serverWant != "":
				wantReason(t, res.err, tt.serverWant)
			case tt.clientWant != "":
				wantReason(t, clientErr, tt.clientWant)
			}
			if tt.errText != "" && !strings.Contains(clientErr.Error(), tt.errText) && !strings.Contains(res.err.Error(), tt.errText) {
				t.Errorf("errors %q / %q do not say %q", clientErr, res.err, tt.errText)
			}
		})
	}
}

func mustIssue(t testing.TB, ca *DevCA, id string) *tls.Certificate {
	t.Helper()
	cert, err := ca.Issue(MustParseID(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// verifyLog wraps cfg.VerifyConnection to report every call: whether the
// session was resumed and the verdict.
type verifyCall struct {
	resumed bool
	err     error
}

func recordVerify(cfg *tls.Config) <-chan verifyCall {
	ch := make(chan verifyCall, 16)
	inner := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := inner(cs)
		select {
		case ch <- verifyCall{resumed: cs.DidResume, err: err}:
		default:
		}
		return err
	}
	return ch
}

// TestDroppedRootEndsNewAndResumedSessions: a peer holds a leaf of the old
// root after a rotation; once the verifying side drops that root, both a
// resumed session (from a ticket of before the drop) and a new one fail.
func TestDroppedRootEndsNewAndResumedSessions(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, dropper := range []string{"server", "client"} {
			t.Run(fmt.Sprintf("%s/%s drops", tls.VersionName(version), dropper), func(t *testing.T) {
				ca := newTestCA(t)
				oldRoot := ca.Roots()[0]
				peerService := "web"
				if dropper == "client" {
					peerService = "billing"
				}
				oldLeaf := mustIssue(t, ca, "spiffe://mesh.local/svc/"+peerService)
				if err := ca.Rotate(); err != nil {
					t.Fatal(err)
				}
				oldIdent, err := NewIdentity(oldLeaf, ca.Roots()) // trusts both roots, keeps its old leaf
				if err != nil {
					t.Fatal(err)
				}
				var serverSrc, clientSrc Source
				if dropper == "server" {
					serverSrc, clientSrc = mustSource(t, ca, "billing"), NewStaticSource(oldIdent)
				} else {
					serverSrc, clientSrc = NewStaticSource(oldIdent), mustSource(t, ca, "web")
				}
				serverCfg := ServerConfig(serverSrc)
				clientCfg := ClientConfig(clientSrc, "billing")
				clientCfg.MaxVersion = version
				clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
				verifier := recordVerify(serverCfg)
				if dropper == "client" {
					verifier = recordVerify(clientCfg)
				}
				addr, results := startTLSServer(t, serverCfg)

				handshake := func(cfg *tls.Config) (tls.ConnectionState, error, serverResult, verifyCall) {
					cs, err := dialTLS(addr, cfg)
					return cs, err, recv(t, results, "server result"), recv(t, verifier, "VerifyConnection")
				}
				// A full handshake, then a resumed one, both accepted.
				if cs, err, res, v := handshake(clientCfg); err != nil || res.err != nil || cs.DidResume || v.err != nil {
					t.Fatalf("first handshake: client %v, server %v, resumed %v", err, res.err, cs.DidResume)
				}
				if cs, err, res, v := handshake(clientCfg); err != nil || res.err != nil || !cs.DidResume || !v.resumed {
					t.Fatalf("second handshake: client %v, server %v, resumed %v, want a resumed session", err, res.err, cs.DidResume)
				}

				if err := ca.DropRoot(serialOf(oldRoot)); err != nil {
					t.Fatal(err)
				}
				// The resumption attempt is verified again, and fails.
				_, err, res, v := handshake(clientCfg)
				if err == nil {
					t.Fatal("resumed session from a dropped root worked")
				}
				if !v.resumed {
					t.Fatal("the third handshake did not attempt resumption")
				}
				wantReason(t, v.err, ReasonUnknownAuthority)
				if res.err == nil {
					t.Error("the server's handshake worked")
				}
				// A new session fails too.
				fresh := clientCfg.Clone()
				fresh.ClientSessionCache = nil
				_, err, _, v = handshake(fresh)
				if err == nil || v.resumed {
					t.Fatalf("new session: err %v, resumed %v; want a refused full handshake", err, v.resumed)
				}
				wantReason(t, v.err, ReasonUnknownAuthority)
			})
		}
	}
}

func TestPeerIDFromState(t *testing.T) {
	ca := newTestCA(t)
	tmpl := leafTemplate(t, "web", time.Now())
	tmpl.URIs = nil
	noURI := signedCert(t, ca, tmpl)
	tmpl = leafTemplate(t, "web", time.Now())
	tmpl.URIs[0].Host = "UPPER"
	badURI := signedCert(t, ca, tmpl)
	tests := []struct {
		name string
		cs   *tls.ConnectionState
		want Reason
	}{
		{name: "nil", cs: nil, want: ReasonNoCertificate},
		{name: "no certificates", cs: &tls.ConnectionState{}, want: ReasonNoCertificate},
		{name: "no URI SAN", cs: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{noURI.Leaf}}, want: ReasonBadSAN},
		{name: "invalid URI SAN", cs: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{badURI.Leaf}}, want: ReasonBadSAN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := PeerIDFromState(tt.cs)
			wantReason(t, err, tt.want)
			if !id.IsZero() {
				t.Errorf("id = %v", id)
			}
		})
	}
	good := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{mustCurrent(t, mustSource(t, ca, "web")).Certificate.Leaf}}
	if n := testing.AllocsPerRun(100, func() { _, _ = PeerIDFromState(good) }); n != 0 {
		t.Errorf("PeerIDFromState allocates %v times", n)
	}
}

// TestRotationUnderLoad: 8 goroutines call an HTTPS server in a loop while
// the leaves renew (the fake clock passes the renewal point) and then the
// root rotates. No call fails, every new handshake presents the newest
// serial, and a keep-alive connection opened before keeps working.
func TestRotationUnderLoad(t *testing.T) {
	fake := clocktest.NewFake(time.Now())
	ca := newTestCA(t, WithClock(fake))
	serverSrc := mustSource(t, ca, "billing")
	clientSrc := mustSource(t, ca, "web")

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, err := PeerIDFromState(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Fprint(w, caller.String())
	}))
	srv.TLS = ServerConfig(serverSrc)
	srv.TLS.Time = fake.Now // verification follows the fake clock the leaves are issued by
	srv.StartTLS()
	defer srv.Close()

	clientCfg := ClientConfig(clientSrc, "billing")
	clientCfg.Time = fake.Now
	newClient := func(keepAlive bool) *http.Client {
		return &http.Client{
			Transport: &http.Transport{TLSClientConfig: clientCfg, DisableKeepAlives: !keepAlive},
			Timeout:   waitLimit,
		}
	}
	// call returns the serial of the server's leaf and whether the
	// connection was reused.
	call := func(c *http.Client) (serial string, reused bool, err error) {
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := c.Do(req)
		if err != nil {
			return "", false, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", false, err
		}
		if resp.StatusCode != http.StatusOK || string(body) != "spiffe://mesh.local/svc/web" {
			return "", false, fmt.Errorf("status %d, body %q", resp.StatusCode, body)
		}
		return serialOf(resp.TLS.PeerCertificates[0]), reused, nil
	}

	serials := []string{mustCurrent(t, serverSrc).Serial()} // in order of publication
	keep := newClient(true)
	defer keep.CloseIdleConnections()
	keepSerial, _, err := call(keep)
	if err != nil || keepSerial != serials[0] {
		t.Fatalf("keep-alive call: %q, %v", keepSerial, err)
	}

	var (
		mu       sync.Mutex
		failures []error
		calls    int
		seen     = map[string]int{}
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	indexOf := func(serial string) int {
		mu.Lock()
		defer mu.Unlock()
		for i, s := range serials {
			if s == serial {
				return i
			}
		}
		return -1
	}
	for w := range 8 {
		wg.Go(func() {
			c := newClient(false) // every call is a new handshake
			defer c.CloseIdleConnections()
			last := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				serial, _, err := call(c)
				mu.Lock()
				calls++
				if err != nil {
					failures = append(failures, fmt.Errorf("worker %d: %w", w, err))
				} else {
					seen[serial]++
				}
				mu.Unlock()
				if err != nil {
					continue
				}
				// Once a worker has seen a serial, its later handshakes
				// never present an older one.
				i := indexOf(serial)
				if i < last {
					mu.Lock()
					failures = append(failures, fmt.Errorf("worker %d: serial %d after %d", w, i, last))
					mu.Unlock()
				}
				last = max(last, i)
			}
		})
	}
	phase := func() { <-time.After(800 * time.Millisecond) } // let the load run; not a timing assertion

	phase()
	// Leaf renewal: past 90% of the lifetime, the next Current renews.
	ch := serverSrc.Changed()
	fake.Advance(DefaultLeafTTL * 92 / 100)
	renewed := mustCurrent(t, serverSrc).Serial()
	mu.Lock()
	serials = append(serials, renewed)
	mu.Unlock()
	if !isClosed(ch) || renewed == serials[0] {
		t.Fatal("the server's leaf did not renew")
	}
	if s, _, err := call(newClient(false)); err != nil || s != renewed {
		t.Errorf("new handshake after renewal presents %q (%v), want %q", s, err, renewed)
	}

	phase()
	// Root rotation: new root, new leaves, both roots trusted.
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	rotated := mustCurrent(t, serverSrc).Serial()
	mu.Lock()
	serials = append(serials, rotated)
	mu.Unlock()
	if s, _, err := call(newClient(false)); err != nil || s != rotated {
		t.Errorf("new handshake after rotation presents %q (%v), want %q", s, err, rotated)
	}

	phase()
	close(stop)
	wg.Wait()

	// The keep-alive connection from before both changes still works, on
	// the same connection and so with the first leaf.
	s, reused, err := call(keep)
	if err != nil || !reused || s != serials[0] {
		t.Errorf("keep-alive connection after rotation: serial %q reused %v err %v; want the first serial on a reused connection", s, reused, err)
	}

	for _, f := range failures {
		t.Error(f)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed", len(failures), calls)
	}
	for i, s := range serials {
		if seen[s] == 0 && i > 0 {
			t.Errorf("no worker saw serial %d (%s); seen %v", i, s, seen)
		}
	}
	t.Logf("%d calls, serials seen: %v", calls, seen)
}

func TestConfigs(t *testing.T) {
	src := NewStaticSource(nil)
	for name, cfg := range map[string]*tls.Config{"client": ClientConfig(src, "billing"), "server": ServerConfig(src)} {
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("%s MinVersion %x", name, cfg.MinVersion)
		}
		if cfg.VerifyConnection == nil {
			t.Errorf("%s has no VerifyConnection", name)
		}
		if len(cfg.Certificates) != 0 {
			t.Errorf("%s has static certificates", name)
		}
	}
	s := ServerConfig(src)
	if s.ClientAuth != tls.RequireAnyClientCert || s.GetCertificate == nil || s.InsecureSkipVerify {
		t.Errorf("server config: %+v", s)
	}
	c := ClientConfig(src, "billing")
	if !c.InsecureSkipVerify || c.GetClientCertificate == nil || c.ServerName != "billing" {
		t.Errorf("client config: %+v", c)
	}
	if _, err := c.GetClientCertificate(nil); !errors.Is(err, ErrNoIdentity) || ReasonOf(err) != ReasonNoIdentity {
		t.Errorf("GetClientCertificate without identity: %v", err)
	}
}

// namedSource is a Source that names its destinations' servers.
type namedSource struct {
	Source
	names map[string]string
}

func (s namedSource) ServerName(service string) string { return s.names[service] }

// TestServerNamerSetsSNI: a ServerNamer source gives the SNI the server
// sees, and the server is still verified against the service, whatever the
// name; a service it names nothing for is sent by its own name.
func TestServerNamerSetsSNI(t *testing.T) {
	ca := newTestCA(t)
	web := namedSource{Source: mustSource(t, ca, "web"), names: map[string]string{
		"billing": "billing.default.dc1.internal.example.consul",
		"ledger":  "billing.default.dc1.internal.example.consul",
	}}
	tests := []struct {
		service string
		sni     string
		ok      bool
	}{
		{"billing", "billing.default.dc1.internal.example.consul", true},
		{"ledger", "billing.default.dc1.internal.example.consul", false}, // billing's name, but billing is not ledger
		{"other", "other", false},
	}
	for _, tc := range tests {
		t.Run(tc.service, func(t *testing.T) {
			addr, results := startTLSServer(t, ServerConfig(mustSource(t, ca, "billing")))
			cfg := ClientConfig(web, tc.service)
			if cfg.ServerName != tc.sni {
				t.Fatalf("ServerName %q, want %q", cfg.ServerName, tc.sni)
			}
			_, err := dialTLS(addr, cfg)
			res := recv(t, results, "server result")
			if res.state.ServerName != tc.sni {
				t.Errorf("server saw SNI %q, want %q", res.state.ServerName, tc.sni)
			}
			if ok := err == nil; ok != tc.ok {
				t.Errorf("dial: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
