package core

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/resilience"
)

// ClassifyErr maps an error of a transport (no response) to the retry kind
// and the layer that failed: connect when no connection was made, tls when
// the handshake or the peer's identity failed, timeout for a deadline the
// transport enforced, upstream when the exchange broke after it began.
func ClassifyErr(err error) (resilience.ErrKind, Layer) {
	switch {
	case isConnectTimeout(err):
		return resilience.ErrConnect, LayerConnect
	case isTLSError(err):
		return resilience.ErrTLS, LayerTLS
	case isDialError(err):
		return resilience.ErrConnect, LayerConnect
	case errors.Is(err, context.DeadlineExceeded):
		return resilience.ErrTimeout, LayerTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return resilience.ErrTimeout, LayerTimeout
	}
	return resilience.ErrReset, LayerUpstream
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

func isTLSError(err error) bool {
	var (
		verr  *tls.CertificateVerificationError
		rerr  tls.RecordHeaderError
		aerr  tls.AlertError
		uaerr x509.UnknownAuthorityError
		cierr x509.CertificateInvalidError
		herr  x509.HostnameError
		echr  *tls.ECHRejectionError
	)
	var ierr *identity.VerifyError
	if errors.As(err, &ierr) || errors.As(err, &verr) || errors.As(err, &rerr) || errors.As(err, &aerr) ||
		errors.As(err, &uaerr) || errors.As(err, &cierr) || errors.As(err, &herr) || errors.As(err, &echr) {
		return true
	}
	// A peer's alert arrives as an unexported type whose text starts with
	// "remote error: tls:"; handshake failures of crypto/tls say "tls:".
	msg := err.Error()
	return strings.Contains(msg, "remote error: tls:") || strings.Contains(msg, "tls: ")
}
