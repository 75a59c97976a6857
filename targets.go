package varbridge

import (
	"fmt"

	"google.golang.org/grpc"

	"github.com/varbridge/varbridge/internal/target"
)

// Targets with several servers. NewBridgedState accepts, besides one
// "host:port" or any gRPC target, a comma-separated list "h1:p1,h2:p2"
// (or "ipv4:a:p,b:p", "ipv6:[a]:p,[b]:p") and "dns:///name:port" with
// several records (package target). Those get gRPC's round_robin policy:
// calls, and streams when they open, go to the servers that are up in
// turn, and a dead server leaves the rotation as soon as its connection
// drops. A stream stays on its server for its life: a watch whose stream
// breaks opens the next on a server that is up and resumes there from its
// revision and incarnation (streamConsumer.failover), and writes in flight
// on a broken write stream fail with ErrUnavailable, never sent again
// (writes.go). Reads retry UNAVAILABLE (retryMethodConfig), so a read cut
// off by a server's death is answered by another.

// dialTarget is what acquirePool dials for a NewBridgedState target.
type dialTarget struct {
	grpcTarget string
	opts       []grpc.DialOption
	// balanced: the target may name several servers (round_robin, and a
	// watch's failovers).
	balanced bool
}

// parseTarget turns a NewBridgedState target into the gRPC target to dial
// and its resolver and service config.
func parseTarget(t string) (dialTarget, error) {
	d, err := target.Parse(t)
	if err != nil {
		return dialTarget{}, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	opts := append(d.Options, grpc.WithDefaultServiceConfig(target.ServiceConfig(d.Balanced, retryMethodConfig)))
	return dialTarget{grpcTarget: d.Target, opts: opts, balanced: d.Balanced}, nil
}
