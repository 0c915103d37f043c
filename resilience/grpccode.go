package resilience

import "strconv"

// GRPCCode is a gRPC status code. The numbering is gRPC's wire contract
// (0..16, the same values as grpc-go's codes.Code), so an adapter converts
// between the two with a plain conversion: GRPCCode(st.Code()) and
// codes.Code(c). This package, and those below the gRPC adapter, use it so
// that they need not import grpc-go.
type GRPCCode uint32

// The gRPC status codes.
const (
	CodeOK                 GRPCCode = 0
	CodeCanceled           GRPCCode = 1
	CodeUnknown            GRPCCode = 2
	CodeInvalidArgument    GRPCCode = 3
	CodeDeadlineExceeded   GRPCCode = 4
	CodeNotFound           GRPCCode = 5
	CodeAlreadyExists      GRPCCode = 6
	CodePermissionDenied   GRPCCode = 7
	CodeResourceExhausted  GRPCCode = 8
	CodeFailedPrecondition GRPCCode = 9
	CodeAborted            GRPCCode = 10
	CodeOutOfRange         GRPCCode = 11
	CodeUnimplemented      GRPCCode = 12
	CodeInternal           GRPCCode = 13
	CodeUnavailable        GRPCCode = 14
	CodeDataLoss           GRPCCode = 15
	CodeUnauthenticated    GRPCCode = 16
)

// codeNames are the names String gives, grpc-go's: "OK", "Canceled", ...
var codeNames = [...]string{
	CodeOK:                 "OK",
	CodeCanceled:           "Canceled",
	CodeUnknown:            "Unknown",
	CodeInvalidArgument:    "InvalidArgument",
	CodeDeadlineExceeded:   "DeadlineExceeded",
	CodeNotFound:           "NotFound",
	CodeAlreadyExists:      "AlreadyExists",
	CodePermissionDenied:   "PermissionDenied",
	CodeResourceExhausted:  "ResourceExhausted",
	CodeFailedPrecondition: "FailedPrecondition",
	CodeAborted:            "Aborted",
	CodeOutOfRange:         "OutOfRange",
	CodeUnimplemented:      "Unimplemented",
	CodeInternal:           "Internal",
	CodeUnavailable:        "Unavailable",
	CodeDataLoss:           "DataLoss",
	CodeUnauthenticated:    "Unauthenticated",
}

// String returns the code's name as grpc-go spells it ("OK", "Unavailable",
// "ResourceExhausted"), or "Code(<n>)" for a code outside 0..16. It does
// not allocate for a known code.
func (c GRPCCode) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// ParseGRPCCode returns the code of a kebab-case gRPC code name, as
// retry_on spells them ("unavailable", "resource-exhausted",
// "deadline-exceeded", ...). "ok" is no failure and is not a name here.
func ParseGRPCCode(name string) (GRPCCode, bool) {
	c, ok := grpcCodeNames[name]
	return c, ok
}
