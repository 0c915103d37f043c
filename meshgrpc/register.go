package meshgrpc

import "google.golang.org/grpc/balancer"

// init registers the mesh's load-balancing policy with grpc-go, under
// BalancerName ("inmesh"). It is the package's one global registration, and
// it is there because grpc-go leaves no choice: a ClientConn finds its
// load-balancing policy by the name its service config gives, in grpc-go's
// global registry only, whereas resolvers can be handed to each ClientConn
// (DialOptions does so with grpc.WithResolvers). The name is ours, so it
// shadows no other policy, and the balancer does nothing for ClientConns
// that do not select it.
func init() {
	balancer.Register(balancerBuilder{})
}
