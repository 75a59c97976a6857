package target

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     string
		balanced bool
		resolver bool
	}{
		{"127.0.0.1:1", "127.0.0.1:1", false, false},
		{"localhost:1", "localhost:1", false, false},
		{"passthrough:///h:1", "passthrough:///h:1", false, false},
		{"unix:///tmp/s", "unix:///tmp/s", false, false},
		{"dns:///example.com:443", "dns:///example.com:443", true, false},
		{"127.0.0.1:1,127.0.0.1:2", StaticScheme + ":///127.0.0.1:1,127.0.0.1:2", true, true},
		{" h1:1 , h2:2 ,h3:3", StaticScheme + ":///h1:1,h2:2,h3:3", true, true},
		{"ipv4:127.0.0.1:1,127.0.0.2:1", StaticScheme + ":///127.0.0.1:1,127.0.0.2:1", true, true},
		{"ipv4:///127.0.0.1:1,127.0.0.2:1", StaticScheme + ":///127.0.0.1:1,127.0.0.2:1", true, true},
		{"ipv6:[::1]:1,[::1]:2", StaticScheme + ":///[::1]:1,[::1]:2", true, true},
		{"ipv4:127.0.0.1:1", StaticScheme + ":///127.0.0.1:1", false, true},
	} {
		d, err := Parse(tc.in)
		if err != nil || d.Target != tc.want || d.Balanced != tc.balanced || (len(d.Options) > 0) != tc.resolver {
			t.Errorf("Parse(%q) = %+v, %v; want %q, balanced %v, resolver %v", tc.in, d, err, tc.want, tc.balanced, tc.resolver)
		}
	}
	for _, bad := range []string{"h1:1,", "h1:1,,h2:2", "h1:1,h2", "h1:1,:2", "h1:1,h2:", "ipv4:", "ipv6:::1"} {
		if d, err := Parse(bad); !errors.Is(err, ErrBadList) {
			t.Errorf("Parse(%q) = %+v, %v; want ErrBadList", bad, d, err)
		}
	}
}

func TestServiceConfig(t *testing.T) {
	for _, tc := range []struct {
		balanced bool
		mc, want string
	}{
		{false, "", "{}"},
		{true, "", `{"loadBalancingConfig": [{"round_robin": {}}]}`},
		{false, "[]", `{"methodConfig": []}`},
		{true, "[]", `{"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": []}`},
	} {
		if got := ServiceConfig(tc.balanced, tc.mc); got != tc.want {
			t.Errorf("ServiceConfig(%v, %q) = %s, want %s", tc.balanced, tc.mc, got, tc.want)
		}
	}
}
