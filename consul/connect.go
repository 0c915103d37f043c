package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/internal/blocking"
)

// ConsulSource is a workload's identity from the Consul agent's Connect CA:
// the leaf certificate the agent issues (and renews) for the service, and
// the CA roots, each watched with a blocking query. The SPIFFE ID is
// Consul's: spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>. A root
// rotation arrives as a new root list holding the old and the new roots and
// a new leaf: both apply through the TLS callbacks, without a restart and
// without closing connections.
//
// ConsulSource is safe for concurrent use; Close stops its watches.
type ConsulSource struct {
	agent   *api.Agent
	service string
	log     *slog.Logger

	current atomic.Pointer[Identity]
	changed notifier

	mu    sync.Mutex // guards leaf and roots, the latest answers
	leaf  *api.LeafCert
	roots *api.CARootList

	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  chan struct{}
	once   sync.Once
}

// NewConsulSource starts watching the leaf of service and the CA roots and
// returns once the first identity is known, or ctx ends (then with the
// error). logger nil means slog.Default().
func NewConsulSource(ctx context.Context, client *api.Client, service string, logger *slog.Logger) (*ConsulSource, error) {
	if logger == nil {
		logger = slog.Default()
	}
	// The watches outlive this call (ctx only bounds the wait for the first
	// identity); Close cancels them.
	runCtx, cancel := context.WithCancel(context.Background())
	s := &ConsulSource{agent: client.Agent(), service: service, log: logger, cancel: cancel, ready: make(chan struct{})}
	var lastErr atomic.Pointer[error]
	onErr := func(what string) func(error, int, time.Duration) {
		return func(err error, failures int, wait time.Duration) {
			lastErr.Store(&err)
			if failures == 1 || failures%10 == 0 {
				s.log.Warn("inmesh: consul connect "+what+" watch failed; the identity in force stays",
					"service", service, "failures", failures, "retry_in", wait, "err", err)
			}
		}
	}
	leafLoop := &blocking.Loop{OnError: onErr("leaf"), Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
		leaf, meta, err := s.agent.ConnectCALeaf(service, (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx))
		if err != nil {
			return blocking.Result{}, err
		}
		s.mu.Lock()
		s.leaf = leaf
		s.mu.Unlock()
		if err := s.rebuild(); err != nil {
			lastErr.Store(&err)
		}
		return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
	}}
	rootsLoop := &blocking.Loop{OnError: onErr("roots"), Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
		roots, meta, err := s.agent.ConnectCARoots((&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx))
		if err != nil {
			return blocking.Result{}, err
		}
		s.mu.Lock()
		s.roots = roots
		s.mu.Unlock()
		if err := s.rebuild(); err != nil {
			lastErr.Store(&err)
		}
		return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
	}}
	s.wg.Go(func() { _ = leafLoop.Run(runCtx) })
	s.wg.Go(func() { _ = rootsLoop.Run(runCtx) })
	select {
	case <-s.ready:
		return s, nil
	case <-ctx.Done():
		s.Close()
		err := ctx.Err()
		if p := lastErr.Load(); p != nil {
			err = fmt.Errorf("%w: %w", err, *p)
		}
		return nil, fmt.Errorf("identity: no identity from Consul for %s: %w", service, err)
	}
}

// rebuild makes a new Identity from the latest leaf and roots and publishes
// it. A leaf that does not parse or match keeps the identity in force.
func (s *ConsulSource) rebuild() error {
	s.mu.Lock()
	leaf, roots := s.leaf, s.roots
	s.mu.Unlock()
	if leaf == nil || roots == nil {
		return nil
	}
	id, err := identityFromConsul(leaf, roots)
	if err != nil {
		s.log.Error("inmesh: consul connect identity rejected; the one in force stays", "service", s.service, "err", err)
		return err
	}
	if cur := s.current.Load(); cur != nil && cur.Serial() == id.Serial() && sameRoots(cur.Roots, id.Roots) {
		return nil
	}
	s.current.Store(id)
	s.changed.notify()
	s.once.Do(func() { close(s.ready) })
	return nil
}

// identityFromConsul builds an Identity from a Connect leaf and root list.
// The agent's CertPEM holds the leaf and the intermediates its chain needs
// (a cross-signed root during a rotation), all kept in the certificate.
func identityFromConsul(leaf *api.LeafCert, roots *api.CARootList) (*Identity, error) {
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		return nil, fmt.Errorf("leaf of %s: %w", leaf.Service, err)
	}
	var anchors []*x509.Certificate
	for _, r := range roots.Roots {
		certs, err := parseCertsPEM([]byte(r.RootCertPEM))
		if err != nil {
			return nil, fmt.Errorf("root %s: %w", r.ID, err)
		}
		anchors = append(anchors, certs[0])
	}
	if len(anchors) == 0 {
		return nil, errors.New("consul returned no CA roots")
	}
	return NewIdentity(&cert, anchors)
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

// Current returns the identity in force.
func (s *ConsulSource) Current() (*Identity, error) {
	if id := s.current.Load(); id != nil {
		return id, nil
	}
	return nil, fmt.Errorf("%w: consul has not issued %s a certificate yet", ErrNoIdentity, s.service)
}

// Changed returns a channel closed at the next change of Current.
func (s *ConsulSource) Changed() <-chan struct{} { return s.changed.wait() }

// Close stops the watches and waits for them. It is safe to call twice.
func (s *ConsulSource) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}
