package httpapi

import (
	"net/http"
	"slices"
	"strings"
)

// CORS for the API routes (Connect calls and the SSE watch), off unless
// origins are given. A page from an allowed origin may call with the
// headers the Connect, gRPC-Web and SSE clients send (Authorization
// included: tokens travel in it, never in cookies, so no credentials mode is
// needed) and read the headers they need back.

var (
	corsMethods      = "GET, POST"
	corsAllowHeaders = strings.Join([]string{
		"Authorization", "Content-Type", "Connect-Protocol-Version", "Connect-Timeout-Ms",
		"Connect-Accept-Encoding", "Connect-Content-Encoding", "Grpc-Timeout", "X-Grpc-Web", "X-User-Agent",
		"Last-Event-ID",
	}, ", ")
	corsExposeHeaders = strings.Join([]string{
		"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "Content-Encoding", "Connect-Content-Encoding",
		"Varbridge-Watch-Revision", "Varbridge-Watch-Incarnation",
	}, ", ")
)

// corsPreflightMaxAge is how long (seconds) a browser may cache a preflight.
const corsPreflightMaxAge = "7200"

type cors struct {
	any     bool     // "*" was given
	origins []string // exact origins otherwise
}

func newCORS(origins []string) *cors {
	c := &cors{}
	for _, o := range origins {
		if o == "*" {
			c.any = true
		} else {
			c.origins = append(c.origins, strings.TrimSuffix(o, "/"))
		}
	}
	return c
}

func (c *cors) on() bool { return c.any || len(c.origins) > 0 }

func (c *cors) allowed(origin string) bool {
	return origin != "" && (c.any || slices.Contains(c.origins, origin))
}

// wrap answers preflights and marks the responses of an allowed origin; a
// request from another origin is served without CORS headers, so the
// browser keeps its page from reading the answer.
func (c *cors) wrap(next http.Handler) http.Handler {
	if !c.on() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		h.Add("Vary", "Origin")
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if !c.allowed(origin) {
			if preflight {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", corsPreflightMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	})
}
