package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Reason says why a peer was refused. Its values are short phrases, fit for
// error messages, logs and metric attributes.
type Reason string

// Reasons of a [VerifyError].
const (
	// ReasonNoCertificate: the peer presented no certificate.
	ReasonNoCertificate Reason = "no certificate"
	// ReasonUnknownAuthority: the peer's chain does not lead to one of the
	// current trust roots (another CA, or a root that was dropped).
	ReasonUnknownAuthority Reason = "unknown authority"
	// ReasonExpired: the peer's leaf (or a certificate of its chain) has
	// expired.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: the peer's leaf is not valid yet.
	ReasonNotYetValid Reason = "not yet valid"
	// ReasonBadSAN: the leaf has zero or several URI SANs (a DNS-only
	// certificate, for one), or its URI SAN is not a valid SPIFFE ID.
	ReasonBadSAN Reason = "bad SAN"
	// ReasonIsCA: the leaf is a CA certificate or may sign certificates or
	// CRLs.
	ReasonIsCA Reason = "leaf is a CA"
	// ReasonWrongTrustDomain: the peer's ID belongs to another trust domain.
	ReasonWrongTrustDomain Reason = "wrong trust domain"
	// ReasonWrongService: the server is not the service the client meant to
	// call.
	ReasonWrongService Reason = "wrong service"
	// ReasonKeyUsage: the leaf may not be used for this side of a connection
	// (its extended key usage lacks ClientAuth or ServerAuth).
	ReasonKeyUsage Reason = "key usage"
	// ReasonNoIdentity: our own source has no identity, so nothing can be
	// verified (and nothing is presented).
	ReasonNoIdentity Reason = "no identity"
)

// VerifyError is the error of a refused peer, returned by [VerifyPeer] and by
// the VerifyConnection and certificate callbacks of [ClientConfig] and
// [ServerConfig] (and so by a failed TLS handshake on the side that refused).
// Find it with [errors.As], or use [ReasonOf].
type VerifyError struct {
	Reason Reason // why the peer was refused
	Peer   string // the peer's SPIFFE ID, else its certificate subject, when known
	Err    error  // the detail; may be nil
}

// Error returns "identity: peer <peer>: <reason>: <detail>", for example
// "identity: peer spiffe://mesh.local/svc/evil: wrong service: want billing";
// parts that are unknown are left out.
func (e *VerifyError) Error() string {
	s := "identity: "
	if e.Peer != "" {
		s += "peer " + e.Peer + ": "
	}
	s += string(e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns Err.
func (e *VerifyError) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of the first [VerifyError] in err's tree, or ""
// when there is none.
func ReasonOf(err error) Reason {
	if ve, ok := errors.AsType[*VerifyError](err); ok {
		return ve.Reason
	}
	return ""
}

// VerifyPeer verifies a peer's certificate chain (leaf first, then the
// intermediates the peer sent) as an X509-SVID against id's current roots at
// now, and returns the peer's SPIFFE ID. The checks, in order:
//
//   - there is a leaf (ReasonNoCertificate) and we have an identity with
//     roots (ReasonNoIdentity);
//   - the leaf has exactly one URI SAN, a valid SPIFFE ID (ReasonBadSAN);
//   - that ID is of id.TrustDomain (id.ID's when empty) (ReasonWrongTrustDomain);
//   - the leaf is not a CA and may not sign certificates or CRLs (ReasonIsCA);
//   - the leaf is valid at now (ReasonExpired, ReasonNotYetValid);
//   - the chain leads to one of id.Roots, through intermediates from chain
//     only, every certificate valid at now (ReasonUnknownAuthority,
//     ReasonExpired);
//   - the extended key usage allows usage, typically
//     x509.ExtKeyUsageClientAuth when verifying a client and
//     x509.ExtKeyUsageServerAuth when verifying a server; a leaf without the
//     extension allows any usage, as in crypto/x509, and
//     x509.ExtKeyUsageAny skips the check (ReasonKeyUsage).
//
// There is no host name check: the SPIFFE ID is the name. Every error is a
// *[VerifyError]. VerifyPeer is safe for concurrent use and does not modify
// its arguments.
func VerifyPeer(chain []*x509.Certificate, id *Identity, usage x509.ExtKeyUsage, now time.Time) (ID, error) {
	if len(chain) == 0 || chain[0] == nil {
		return ID{}, &VerifyError{Reason: ReasonNoCertificate}
	}
	leaf := chain[0]
	if id == nil {
		return ID{}, &VerifyError{Reason: ReasonNoIdentity, Peer: subjectOf(leaf), Err: ErrNoIdentity}
	}
	pool := id.Pool
	if pool == nil {
		// Never let a nil pool reach x509 Verify: it would mean the
		// system roots.
		if len(id.Roots) == 0 {
			return ID{}, &VerifyError{Reason: ReasonNoIdentity, Peer: subjectOf(leaf), Err: errors.New("no trust roots")}
		}
		pool = x509.NewCertPool()
		for _, r := range id.Roots {
			if r != nil {
				pool.AddCert(r)
			}
		}
	}

	if n := len(leaf.URIs); n != 1 {
		return ID{}, &VerifyError{Reason: ReasonBadSAN, Peer: subjectOf(leaf),
			Err: fmt.Errorf("%d URI SANs, want exactly one SPIFFE ID", n)}
	}
	peer, err := idFromURL(leaf.URIs[0])
	if err != nil {
		return ID{}, &VerifyError{Reason: ReasonBadSAN, Peer: subjectOf(leaf), Err: err}
	}
	td := id.TrustDomain
	if td == "" {
		td = id.ID.TrustDomain()
	}
	if peer.TrustDomain() != td || td == "" {
		return ID{}, &VerifyError{Reason: ReasonWrongTrustDomain, Peer: peer.String(),
			Err: fmt.Errorf("want %s", td)}
	}
	if leaf.IsCA {
		return ID{}, &VerifyError{Reason: ReasonIsCA, Peer: peer.String(), Err: errors.New("basic constraints say CA")}
	}
	if leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return ID{}, &VerifyError{Reason: ReasonIsCA, Peer: peer.String(), Err: errors.New("key usage allows signing certificates or CRLs")}
	}
	if now.After(leaf.NotAfter) {
		return ID{}, &VerifyError{Reason: ReasonExpired, Peer: peer.String(),
			Err: fmt.Errorf("not after %s, now %s", leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	if now.Before(leaf.NotBefore) {
		return ID{}, &VerifyError{Reason: ReasonNotYetValid, Peer: peer.String(),
			Err: fmt.Errorf("not before %s, now %s", leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}

	opts := x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			if c != nil {
				opts.Intermediates.AddCert(c)
			}
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		return ID{}, &VerifyError{Reason: chainReason(err), Peer: peer.String(), Err: err}
	}
	return peer, nil
}

// chainReason maps an error of x509 chain verification to a Reason.
func chainReason(err error) Reason {
	if ie, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		switch ie.Reason {
		case x509.Expired:
			return ReasonExpired
		case x509.IncompatibleUsage:
			return ReasonKeyUsage
		case x509.NotAuthorizedToSign:
			return ReasonUnknownAuthority
		}
	}
	return ReasonUnknownAuthority
}

// subjectOf names a certificate whose ID is unknown.
func subjectOf(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "serial " + serialOf(c)
}

// verifyServer is the client's check: the server is a peer of the trust
// domain with a ServerAuth leaf whose ID names service.
func verifyServer(chain []*x509.Certificate, id *Identity, service string, now time.Time) (ID, error) {
	peer, err := VerifyPeer(chain, id, x509.ExtKeyUsageServerAuth, now)
	if err != nil {
		return ID{}, err
	}
	if got, ok := peer.Service(); !ok || got != service || service == "" {
		return ID{}, &VerifyError{Reason: ReasonWrongService, Peer: peer.String(), Err: fmt.Errorf("want %s", service)}
	}
	return peer, nil
}
