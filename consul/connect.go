package consul

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul/internal/blocking"
	"github.com/inmesh/inmesh/identity"
)

// IdentitySource is a workload's identity from the Consul agent's Connect
// CA: the leaf certificate the agent issues (and renews) for the service,
// watched with a blocking query, and the CA roots, read with each leaf.
// The SPIFFE ID is Consul's:
// spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>. A root rotation
// arrives as a new leaf, with the new root list holding the old and the
// new roots: both apply through the TLS callbacks, without a restart and
// without closing connections. It implements identity.Source.
//
// IdentitySource is safe for concurrent use; Close stops its watches.
type IdentitySource struct {
	agent   *api.Agent
	service string
	log     *slog.Logger
	val     value[identity.Identity]
	last    lastError

	mu          sync.Mutex // guards trustDomain
	trustDomain string     // of the latest roots; the answers are not kept
}

var (
	_ identity.Source      = (*IdentitySource)(nil)
	_ identity.ServerNamer = (*IdentitySource)(nil)
)

// NewIdentitySource starts watching the Connect leaf of service (and the
// CA roots with it), and returns once the first identity is known, or ctx
// ends (then it stops and returns the error, with the last failure). The
// watch outlives ctx; Close stops it. A nil logger means slog.Default().
func NewIdentitySource(ctx context.Context, client *api.Client, service string, logger *slog.Logger) (*IdentitySource, error) {
	if client == nil {
		return nil, errNoClient
	}
	s := startIdentity(client, "", service, orDefault(logger))
	if err := s.val.await(ctx, "Connect identity for "+service, s.last.load); err != nil {
		return nil, err
	}
	return s, nil
}

// startIdentity starts the watches, with token ("": the Client's own), and
// returns at once.
func startIdentity(client *api.Client, token, service string, logger *slog.Logger) *IdentitySource {
	s := &IdentitySource{agent: client.Agent(), service: service, log: logger}
	s.val.start()
	onErr := func(what string) func(error, int, time.Duration) {
		return func(err error, failures int, wait time.Duration) {
			s.last.store(err)
			if failures == 1 || failures%10 == 0 {
				s.log.Warn("consul connect "+what+" watch failed; the identity in force stays",
					"service", service, "failures", failures, "retry_in", wait, "err", err)
			}
		}
	}
	// One long poll, on the leaf: the agent re-issues the leaf when the CA
	// roots change (its leaf cache watches them), so the roots are read,
	// without blocking, with each new leaf. During a rotation a new leaf
	// carries the cross-signed intermediate its chain needs, so a peer
	// that has the new leaf before this workload has the new roots still
	// verifies against the old root.
	rootsDue := false // the last roots read failed: read again at once
	leafLoop := &blocking.Loop{OnError: onErr("leaf"), Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
		if rootsDue {
			index = 0
		}
		leaf, meta, err := s.agent.ConnectCALeaf(service, query(&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}, token).WithContext(ctx))
		if err != nil {
			return blocking.Result{}, err
		}
		roots, _, err := s.agent.ConnectCARoots(query(&api.QueryOptions{}, token).WithContext(ctx))
		if err != nil {
			rootsDue = true
			return blocking.Result{}, fmt.Errorf("reading the CA roots: %w", err)
		}
		rootsDue = false
		s.mu.Lock()
		s.trustDomain = roots.TrustDomain
		s.mu.Unlock()
		if err := s.rebuild(leaf, roots); err != nil {
			s.last.store(err)
		}
		return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
	}}
	s.val.run(func(ctx context.Context) { _ = leafLoop.Run(ctx) })
	return s
}

// rebuild makes a new Identity from the latest leaf and roots and publishes
// it. A leaf that does not parse or match keeps the identity in force.
// Neither answer is kept: the identity holds what it needs of them.
func (s *IdentitySource) rebuild(leaf *api.LeafCert, roots *api.CARootList) error {
	id, err := identityFromConsul(leaf, roots)
	if err != nil {
		s.log.Error("consul connect identity rejected; the one in force stays", "service", s.service, "err", err)
		return err
	}
	if cur := s.val.load(); cur != nil && cur.Serial() == id.Serial() && sameRoots(cur.Roots, id.Roots) {
		return nil
	}
	s.val.set(id)
	return nil
}

// identityFromConsul builds an Identity from a Connect leaf and root list.
// The agent's CertPEM holds the leaf and the intermediates its chain needs
// (a cross-signed root during a rotation), all kept in the certificate.
func identityFromConsul(leaf *api.LeafCert, roots *api.CARootList) (*identity.Identity, error) {
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		return nil, fmt.Errorf("consul: leaf of %s: %w", leaf.Service, err)
	}
	var anchors []*x509.Certificate
	for _, r := range roots.Roots {
		c, err := firstCertPEM([]byte(r.RootCertPEM))
		if err != nil {
			return nil, fmt.Errorf("consul: root %s: %w", r.ID, err)
		}
		anchors = append(anchors, c)
	}
	if len(anchors) == 0 {
		return nil, errors.New("consul: the agent returned no CA roots")
	}
	return identity.NewIdentity(&cert, anchors)
}

// firstCertPEM parses the first CERTIFICATE block of data.
func firstCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

func sameRoots(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// ServerName implements identity.ServerNamer: the TLS server name a mesh
// sends when it dials service, the one Consul gives Envoy for an upstream
// in this datacenter, ServiceSNI(service, "default", <dc>, <trust domain>),
// with the datacenter of this workload's own SPIFFE ID and the trust domain
// of the CA roots. An Envoy sidecar in front of service expects it; an
// inmesh server takes any name. Before the first identity, or with an ID
// not in Consul's form, it returns "" (the service name is sent).
func (s *IdentitySource) ServerName(service string) string {
	id := s.val.load()
	if id == nil {
		return ""
	}
	dc, ok := datacenterOf(id.ID.Path())
	if !ok {
		return ""
	}
	s.mu.Lock()
	td := s.trustDomain
	s.mu.Unlock()
	if td == "" {
		td = id.ID.TrustDomain()
	}
	return ServiceSNI(service, "", dc, td)
}

// ServiceSNI is the TLS server name Consul gives Envoy for an upstream
// service of the default partition: <service>.<namespace>.<datacenter>.internal.<trust domain>,
// the namespace "default" when namespace is "". The trust domain is the
// Connect CA's (api.CARootList.TrustDomain, "<cluster id>.consul").
func ServiceSNI(service, namespace, datacenter, trustDomain string) string {
	if namespace == "" {
		namespace = "default"
	}
	return service + "." + namespace + "." + datacenter + ".internal." + trustDomain
}

// datacenterOf returns the datacenter of a Consul service SPIFFE ID's path,
// /ns/<ns>/dc/<dc>/svc/<service>.
func datacenterOf(path string) (string, bool) {
	parts := strings.Split(path, "/")
	if len(parts) != 7 || parts[0] != "" || parts[1] != "ns" || parts[3] != "dc" || parts[5] != "svc" || parts[4] == "" {
		return "", false
	}
	return parts[4], true
}

// Current returns the identity in force.
func (s *IdentitySource) Current() (*identity.Identity, error) {
	if id := s.val.load(); id != nil {
		return id, nil
	}
	return nil, fmt.Errorf("%w: consul has not issued %s a certificate yet", identity.ErrNoIdentity, s.service)
}

// Changed returns a channel closed at the next change of Current.
func (s *IdentitySource) Changed() <-chan struct{} { return s.val.changed() }

// String names the source on the admin handler's /certs.
func (s *IdentitySource) String() string { return "consul-connect" }

// Close stops the watches and waits for them. It is safe to call twice.
func (s *IdentitySource) Close() error {
	s.val.close()
	return nil
}
