package mesh

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc/metadata"
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

// rpcContext returns a context whose outgoing metadata is h, with the
// lower-case keys gRPC uses, for matching routes as a client interceptor
// would.
func rpcContext(h http.Header) context.Context {
	md := make(metadata.MD, len(h))
	for k, v := range h {
		md[strings.ToLower(k)] = v
	}
	return metadata.NewOutgoingContext(context.Background(), md)
}
