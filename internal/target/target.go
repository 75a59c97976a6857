// Package target turns a client's server address, which may name several
// servers, into what gRPC dials: the gRPC target, a resolver for address
// lists, and whether the channel balances over several servers. The Go
// client (package varbridge) and the CLI's unary commands both dial through
// it, so they accept the same addresses.
//
// Accepted, besides one "host:port" or any gRPC target (kept as it is):
//
//   - a comma-separated list "h1:p1,h2:p2,h3:p3" (also spelled
//     "ipv4:a:p,b:p" or "ipv6:[a]:p,[b]:p", as gRPC's C core, and so the
//     Python client, write them), handed to gRPC by a static resolver;
//   - "dns:///name:port", whose records gRPC's DNS resolver follows.
//
// Both balance: gRPC's round_robin policy (ServiceConfig) sends each call,
// and each stream when it opens, to the next server that is up, and a
// server whose connection drops leaves the rotation at once (gRPC redials
// it in the background and takes it back when it answers). A stream stays
// on the server it opened on for its life. Any other target keeps gRPC's
// default pick_first, exactly as with one server.
package target

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
)

// StaticScheme is the scheme of the resolver that serves an address list.
const StaticScheme = "varbridge-static"

// Dial is what to dial for a client's address.
type Dial struct {
	// Target is the gRPC target.
	Target string
	// Options carry the static resolver for an address list (none
	// otherwise); add ServiceConfig's as the default service config.
	Options []grpc.DialOption
	// Balanced: the target may name several servers.
	Balanced bool
}

// ErrBadList is the error of an address list that is not host:port,...
var ErrBadList = errors.New("bad server address list")

// Parse turns a client's server address into what gRPC dials.
func Parse(addr string) (Dial, error) {
	list, isList := strings.CutPrefix(addr, "ipv4:")
	if !isList {
		list, isList = strings.CutPrefix(addr, "ipv6:")
	}
	if !isList && strings.Contains(addr, ",") && !strings.Contains(addr, "://") {
		list, isList = addr, true
	}
	if isList {
		addrs, err := SplitList(strings.TrimLeft(list, "/"))
		if err != nil {
			return Dial{}, fmt.Errorf("%w %q: %v", ErrBadList, addr, err)
		}
		return Dial{
			Target:   StaticScheme + ":///" + strings.Join(addrs, ","),
			Options:  []grpc.DialOption{grpc.WithResolvers(staticBuilder{addrs: addrs})},
			Balanced: len(addrs) > 1,
		}, nil
	}
	return Dial{Target: addr, Balanced: strings.HasPrefix(addr, "dns:")}, nil
}

// SplitList splits "h1:p1,h2:p2" into its addresses, each checked to be
// host:port (a name, an IPv4 address, or a bracketed IPv6 address), spaces
// around them trimmed.
func SplitList(list string) ([]string, error) {
	var addrs []string
	for a := range strings.SplitSeq(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, errors.New("an empty address")
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("address %q: want host:port: %v", a, err)
		}
		if host == "" || port == "" {
			return nil, fmt.Errorf("address %q: want host:port", a)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// ServiceConfig is the default service config of a channel: round_robin
// when balanced (gRPC's default, pick_first, otherwise), and methodConfig,
// a JSON array of method configs or "".
func ServiceConfig(balanced bool, methodConfig string) string {
	var parts []string
	if balanced {
		parts = append(parts, `"loadBalancingConfig": [{"round_robin": {}}]`)
	}
	if methodConfig != "" {
		parts = append(parts, `"methodConfig": `+methodConfig)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// staticBuilder resolves StaticScheme targets to its fixed addresses, each
// an endpoint of its own, so that round_robin balances over them. It is
// handed to each ClientConn (grpc.WithResolvers), not registered globally.
type staticBuilder struct{ addrs []string }

func (b staticBuilder) Scheme() string { return StaticScheme }

func (b staticBuilder) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	st := resolver.State{}
	for _, a := range b.addrs {
		// ServerName: each server is named by its own address (the
		// :authority it gets and, with TLS, the name its certificate must
		// carry unless the TLS configuration names one).
		addr := resolver.Address{Addr: a, ServerName: a}
		st.Addresses = append(st.Addresses, addr)
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{addr}})
	}
	if err := cc.UpdateState(st); err != nil {
		return nil, err
	}
	return staticResolver{}, nil
}

// OverrideAuthority makes the first address the channel's authority: the
// list itself is not a valid one.
func (b staticBuilder) OverrideAuthority(resolver.Target) string { return b.addrs[0] }

// staticResolver has nothing to do: its addresses never change.
type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}
