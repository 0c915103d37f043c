package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNoIdentity is matched by [errors.Is] when a [Source] has no identity to
// give (a nil source or identity, an expired certificate, a closed source
// that never loaded one).
var ErrNoIdentity = errors.New("identity: no identity available")

// Identity is one immutable view of this workload's credentials: its SPIFFE
// ID, its certificate and private key, and the trust roots of its trust
// domain. Sources replace an Identity whole when anything changes; never
// modify one, nor anything it points to, as it is shared between goroutines
// without locks. Build one with [NewIdentity], which checks the invariants
// below.
type Identity struct {
	// ID is the SPIFFE ID of the certificate's single URI SAN.
	ID ID
	// Certificate is the leaf first, then intermediates; PrivateKey and Leaf
	// are set.
	Certificate *tls.Certificate
	// TrustDomain is ID.TrustDomain().
	TrustDomain string
	// Roots are the trust anchors of TrustDomain, never empty.
	Roots []*x509.Certificate
	// Pool holds the same roots as Roots.
	Pool *x509.CertPool
}

// NewIdentity checks cert and roots and returns the Identity they make. cert
// must hold a leaf (first) and a private key matching it; the leaf must not be
// a CA and must carry exactly one URI SAN, a valid SPIFFE ID, which gives ID
// and TrustDomain. roots must not be empty. cert.Leaf is parsed when nil.
// NewIdentity copies cert and roots (not the certificates they point to), so
// the caller may reuse them; it does not check that the leaf chains to the
// roots or is currently valid.
func NewIdentity(cert *tls.Certificate, roots []*x509.Certificate) (*Identity, error) {
	id, err := buildIdentity(cert, roots)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return id, nil
}

// buildIdentity is NewIdentity with errors that callers prefix.
func buildIdentity(cert *tls.Certificate, roots []*x509.Certificate) (*Identity, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	c := *cert
	c.Certificate = append([][]byte(nil), cert.Certificate...)
	if c.Leaf == nil {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("leaf certificate: %w", err)
		}
		c.Leaf = leaf
	}
	leaf := c.Leaf
	if c.PrivateKey == nil {
		return nil, errors.New("certificate has no private key")
	}
	signer, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", c.PrivateKey)
	}
	if !publicKeyEqual(signer, leaf.PublicKey) {
		return nil, errors.New("private key does not match the certificate")
	}
	id, err := leafID(leaf)
	if err != nil {
		return nil, err
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("certificate of %s is a CA certificate, not a leaf", id)
	}
	if len(roots) == 0 {
		return nil, errors.New("no trust roots")
	}
	pool := x509.NewCertPool()
	for i, r := range roots {
		if r == nil {
			return nil, fmt.Errorf("trust root %d is nil", i)
		}
		pool.AddCert(r)
	}
	return &Identity{
		ID:          id,
		Certificate: &c,
		TrustDomain: id.TrustDomain(),
		Roots:       append([]*x509.Certificate(nil), roots...),
		Pool:        pool,
	}, nil
}

// leafID returns the SPIFFE ID of a certificate's single URI SAN.
func leafID(leaf *x509.Certificate) (ID, error) {
	if n := len(leaf.URIs); n != 1 {
		return ID{}, fmt.Errorf("certificate %q has %d URI SANs, want exactly one SPIFFE ID", leaf.Subject, n)
	}
	id, err := idFromURL(leaf.URIs[0])
	if err != nil {
		if ie, ok := errors.AsType[*idError](err); ok {
			return ID{}, fmt.Errorf("URI SAN %q: %s", ie.input, ie.problem)
		}
		return ID{}, err
	}
	return id, nil
}

// leaf returns the parsed leaf certificate, or nil.
func (i *Identity) leaf() *x509.Certificate {
	if i == nil || i.Certificate == nil {
		return nil
	}
	return i.Certificate.Leaf
}

// NotAfter returns the end of the leaf certificate's validity; the zero time
// for a nil Identity or one without a parsed leaf.
func (i *Identity) NotAfter() time.Time {
	if l := i.leaf(); l != nil {
		return l.NotAfter
	}
	return time.Time{}
}

// Serial returns the leaf certificate's serial number in lower-case
// hexadecimal (the form [DevCA.DropRoot] takes); "" for a nil Identity or
// one without a parsed leaf.
func (i *Identity) Serial() string { return serialOf(i.leaf()) }

// serialOf returns the serial number of c in lower-case hex, or "".
func serialOf(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// Source gives this workload's certificate and trust roots and says when they
// change. Implementations are safe for concurrent use; Current sits on the
// handshake path and should not block.
//
// To follow changes, take Changed before Current, so that a change between
// the two calls is not missed:
//
//	for {
//		ch := src.Changed()
//		id, err := src.Current()
//		... use id or err ...
//		<-ch
//	}
type Source interface {
	// Current returns the identity in force. It returns an error, and no
	// identity, when none is available; callers deny on error. The
	// returned Identity must not be modified.
	Current() (*Identity, error)
	// Changed returns a channel that is closed at the next change of the
	// identity (a new certificate or new roots). Call it again after it
	// fires. A source that never changes returns a channel that is never
	// closed.
	Changed() <-chan struct{}
}

// ServerNamer is implemented by a [Source] whose mesh names a destination's
// servers otherwise than by the destination's service name: ServerName
// returns the TLS server name (SNI) a client of [ClientConfig] sends when it
// dials service, or "" for the service name itself. [ClientConfig] asks it
// once, when it builds the config (a mesh builds one per destination), so
// a handshake costs nothing more. Consul's Connect CA source gives the name
// Consul gives Envoy for an upstream. The name only tells the server which
// service was meant: the server's identity is still verified against
// service, whatever the name.
type ServerNamer interface {
	ServerName(service string) string
}

// serverName is the SNI of a client config toward service: src's, when it
// names one, else service.
func serverName(src Source, service string) string {
	if n, ok := src.(ServerNamer); ok && service != "" {
		if name := n.ServerName(service); name != "" {
			return name
		}
	}
	return service
}

// staticSource is a Source whose identity never changes.
type staticSource struct {
	id    *Identity
	never chan struct{}
}

// NewStaticSource returns a Source that always gives id and never changes,
// for tests and fixed setups. A nil id gives a Source whose Current always
// returns an error matching [ErrNoIdentity]. id must not be modified.
func NewStaticSource(id *Identity) Source {
	return &staticSource{id: id, never: make(chan struct{})}
}

func (s *staticSource) Current() (*Identity, error) {
	if s.id == nil {
		return nil, fmt.Errorf("%w: static source has none", ErrNoIdentity)
	}
	return s.id, nil
}

func (s *staticSource) Changed() <-chan struct{} { return s.never }

// currentOf calls src.Current, turning a nil source, a nil identity and an
// identity without a certificate or roots into errors.
func currentOf(src Source) (*Identity, error) {
	if src == nil {
		return nil, fmt.Errorf("%w: nil source", ErrNoIdentity)
	}
	id, err := src.Current()
	if err != nil {
		return nil, err
	}
	if id == nil || id.Certificate == nil || id.Pool == nil || id.ID.IsZero() {
		return nil, fmt.Errorf("%w: the source returned an incomplete identity", ErrNoIdentity)
	}
	return id, nil
}

// notifier hands out a channel that is closed at the next notify. The
// channel is made on demand, so nothing is allocated while nobody listens.
// The zero value is ready to use; it is safe for concurrent use.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns the channel closed by the next notify.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// notify closes the channel handed out by wait, if any.
func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
