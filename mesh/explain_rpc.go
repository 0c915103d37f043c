package mesh

import (
	"net/http"
	"strings"

	"github.com/inmesh/inmesh/internal/core"
)

// isRPC reports whether Explain takes req for a gRPC call: its URL scheme is
// "grpc", or its Content-Type is application/grpc or application/grpc+...
func isRPC(req *http.Request) bool {
	if strings.EqualFold(req.URL.Scheme, "grpc") {
		return true
	}
	ct := strings.ToLower(req.Header.Get("Content-Type"))
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// rpcMetadata returns h as the metadata of an RPC, with the lower-case
// keys gRPC uses, for matching routes as the client interceptor would.
func rpcMetadata(h http.Header) core.Metadata {
	md := make(core.Metadata, len(h))
	for k, v := range h {
		md[strings.ToLower(k)] = v
	}
	return md
}
