package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"
)

// ClientConfig returns the TLS config for dialing service with mutual TLS:
// the client presents src's current certificate (read in
// GetClientCertificate at every handshake, so a rotated certificate is used
// without a restart) and requires the server to prove, in VerifyConnection, a
// SPIFFE ID of src's trust domain whose Service() is service, under the
// X509-SVID rules of [VerifyPeer] with ServerAuth usage. An empty service
// matches no server.
//
// The config sets ServerName to service, or to the name src gives when it is
// a [ServerNamer]; it is sent as SNI (so servers see which service was
// meant, and the session cache is keyed by it); no host name is checked. MinVersion is TLS 1.2; Go prefers TLS 1.3. The config has
// no ClientSessionCache: set one to resume sessions, which VerifyConnection
// verifies again against the roots current at that time.
//
// Verification uses the returned config's Time when the caller sets it
// before use (tests inject a fake clock that way), else time.Now; copies made
// with Clone share the verifier, which reads the original's Time. The handshake
// fails on any error: no identity of our own, a refused server (a
// *[VerifyError]). A nil src gives a config whose every handshake fails.
//
// The caller may change the returned config (NextProtos, a session cache,
// ...) before its first use, but not the callbacks.
func ClientConfig(src Source, service string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName(src, service),
		// Go's own verification checks a DNS name against the WebPKI-style
		// roots; SPIFFE peers are named by their URI SAN instead. It is off
		// only because VerifyConnection below does the full X509-SVID
		// verification (chain to the current roots included) on every
		// handshake, resumed ones too, and fails the handshake on any error.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		id, err := ownIdentity(src)
		if err != nil {
			return nil, err
		}
		return id.Certificate, nil
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := ownIdentity(src)
		if err != nil {
			return err
		}
		_, err = verifyServer(cs.PeerCertificates, id, service, configNow(cfg))
		return err
	}
	return cfg
}

// ServerConfig returns the TLS config of a server that requires mutual TLS:
// it presents src's current certificate (read in GetCertificate at every
// handshake, so a rotated certificate is used without a restart), requires a
// client certificate (RequireAnyClientCert) and accepts the client in
// VerifyConnection under the X509-SVID rules of [VerifyPeer] with ClientAuth
// usage: any service of src's trust domain may connect; which calls it may
// make is the [Authorizer]'s business, with the ID from [PeerIDFromState].
//
// VerifyConnection runs on resumed sessions too and verifies the client's
// chain again against the roots current at that time, so a dropped root
// also ends resumption. MinVersion is TLS 1.2; Go prefers TLS 1.3. Session
// tickets are on (Go's default).
//
// GetCertificate is not consulted by crypto/tls when the config also has
// Certificates and the client sends no SNI; leave Certificates empty (clients
// of [ClientConfig] always send SNI). Time and Clone behave as for
// [ClientConfig]. The handshake fails on any error. A nil src gives a config
// whose every handshake fails.
func ServerConfig(src Source) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert, // verified in VerifyConnection
	}
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		id, err := ownIdentity(src)
		if err != nil {
			return nil, err
		}
		return id.Certificate, nil
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := ownIdentity(src)
		if err != nil {
			return err
		}
		_, err = VerifyPeer(cs.PeerCertificates, id, x509.ExtKeyUsageClientAuth, configNow(cfg))
		return err
	}
	return cfg
}

// configNow returns cfg.Time() when set, else time.Now().
func configNow(cfg *tls.Config) time.Time {
	if cfg.Time != nil {
		return cfg.Time()
	}
	return time.Now()
}

// PeerIDFromState returns the SPIFFE ID of the peer of a connection: the
// single URI SAN of cs.PeerCertificates[0]. It does not verify anything: use
// it on connections made with [ClientConfig] or [ServerConfig], whose
// handshake verified the peer (an http.Request's TLS field, for one). It does
// not allocate for a valid ID. A nil cs or one without peer certificates gives
// a *[VerifyError] with ReasonNoCertificate; a bad SAN, ReasonBadSAN.
func PeerIDFromState(cs *tls.ConnectionState) (ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0] == nil {
		return ID{}, &VerifyError{Reason: ReasonNoCertificate}
	}
	leaf := cs.PeerCertificates[0]
	if len(leaf.URIs) != 1 {
		return ID{}, &VerifyError{Reason: ReasonBadSAN, Peer: subjectOf(leaf),
			Err: errors.New("want exactly one URI SAN")}
	}
	id, err := idFromURL(leaf.URIs[0])
	if err != nil {
		return ID{}, &VerifyError{Reason: ReasonBadSAN, Peer: subjectOf(leaf), Err: err}
	}
	return id, nil
}

// ownIdentity returns src's identity for a handshake, or the error that
// fails the handshake: with no identity of our own, deny.
func ownIdentity(src Source) (*Identity, error) {
	id, err := currentOf(src)
	if err != nil {
		return nil, &VerifyError{Reason: ReasonNoIdentity, Err: err}
	}
	return id, nil
}
