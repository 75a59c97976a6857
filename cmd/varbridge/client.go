package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/varbridge/varbridge/cmd/varbridge/internal/values"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/target"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// The environment variables client commands read when the matching flag is
// not given (flags win), as etcdctl reads ETCDCTL_ENDPOINTS.
const (
	envAddr          = "VARBRIDGE_ADDR"
	envSession       = "VARBRIDGE_SESSION"
	envToken         = "VARBRIDGE_TOKEN"
	envTLSCA         = "VARBRIDGE_TLS_CA"
	envTLSServerName = "VARBRIDGE_TLS_SERVER_NAME"
)

// Output formats (-o).
const (
	outText      = "text"
	outJSON      = "json"      // one JSON object per line, values decoded (see jsonValue)
	outProtoJSON = "protojson" // the response message as protobuf JSON
)

// globalOptions holds what the root command knows: only the hidden --json
// alias. The client flags belong to each client command (serve has none of
// them) and are read from the command that runs, by name, in resolve.
type globalOptions struct {
	legacyJSON bool
}

// clientFlags adds the client flags to cmd. outputs are the -o formats the
// command prints; the first is the default.
func (g *globalOptions) clientFlags(cmd *cobra.Command, outputs ...string) {
	f := cmd.Flags()
	f.String("addr", "127.0.0.1:50051",
		"server address host:port, or several servers sharing their sessions as host:port,host:port,... "+
			"or dns:///name:port (calls go to the servers that are up in turn; watch moves to another when its server dies) (env "+envAddr+")")
	f.String("session", "default", "session id (env "+envSession+")")
	f.String("token", "",
		"token sent as 'authorization: Bearer <token>': the session's, or for 'sessions' the operator's (env "+envToken+")")
	f.String("tls-ca", "", "connect over TLS, trusting the CA certificates in this PEM file (env "+envTLSCA+")")
	f.String("tls-server-name", "",
		"connect over TLS, expecting this name in the server's certificate (env "+envTLSServerName+")")
	f.Bool("tls", false, "connect over TLS, trusting the system's CA certificates")
	f.Duration("timeout", 5*time.Second, "deadline for the whole command (0: none)")
	if len(outputs) > 0 {
		f.StringP("output", "o", outputs[0], "output format: "+strings.Join(outputs, ", "))
		if cmd.Annotations == nil {
			cmd.Annotations = map[string]string{}
		}
		cmd.Annotations["outputs"] = strings.Join(outputs, ",")
	}
}

// clientConfig is what a client command connects with, resolved once from
// flags and environment. Unary commands and watch dial from the same one, so
// address checks, TLS and tokens behave the same for both.
type clientConfig struct {
	addr    string
	session string
	token   string
	tls     *tls.Config // nil: plaintext
	timeout time.Duration
	output  string
}

// resolve reads the client flags of cmd, falling back to the environment for
// those not given, and checks them before anything is dialed.
func (g *globalOptions) resolve(cmd *cobra.Command) (*clientConfig, error) {
	f := cmd.Flags()
	pick := func(flag, env string) string {
		v, _ := f.GetString(flag)
		if !f.Changed(flag) {
			if e, ok := os.LookupEnv(env); ok && e != "" {
				return e
			}
		}
		return v
	}
	timeout, _ := f.GetDuration("timeout")
	useTLS, _ := f.GetBool("tls")
	cc := &clientConfig{
		addr:    pick("addr", envAddr),
		session: pick("session", envSession),
		token:   pick("token", envToken),
		timeout: timeout,
	}
	if err := checkAddr(cc.addr); err != nil {
		return nil, err
	}
	var err error
	if cc.tls, err = loadTLS(pick("tls-ca", envTLSCA), pick("tls-server-name", envTLSServerName), useTLS); err != nil {
		return nil, err
	}
	if cc.output, err = g.outputFormat(cmd); err != nil {
		return nil, err
	}
	return cc, nil
}

// outputFormat is -o, or what the hidden --json alias stood for before -o
// existed: protobuf JSON of the response (watch: its JSON lines).
func (g *globalOptions) outputFormat(cmd *cobra.Command) (string, error) {
	if cmd.Annotations["outputs"] == "" {
		return outText, nil
	}
	allowed := strings.Split(cmd.Annotations["outputs"], ",")
	f := cmd.Flags()
	if !f.Changed("output") && g.legacyJSON {
		if cmd.Name() == "watch" {
			return outJSON, nil
		}
		return outProtoJSON, nil
	}
	out, _ := f.GetString("output")
	for _, o := range allowed {
		if out == o {
			return o, nil
		}
	}
	return "", fmt.Errorf("-o %q: want one of %s", out, strings.Join(allowed, ", "))
}

// checkAddr rejects an address gRPC could not dial with a message that says
// what is wrong, before dialing: gRPC's own ("produced zero addresses") does
// not. A list of servers (host:port,host:port) has each of its addresses
// checked. Targets with a scheme (dns:///, unix:, ...) are left to gRPC.
func checkAddr(addr string) error {
	if strings.Contains(addr, ":///") || strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "unix-abstract:") {
		return nil
	}
	list, isList := strings.CutPrefix(addr, "ipv4:")
	if !isList {
		list, isList = strings.CutPrefix(addr, "ipv6:")
	}
	if isList || strings.Contains(addr, ",") {
		if !isList {
			list = addr
		}
		for _, a := range strings.Split(strings.TrimLeft(list, "/"), ",") {
			if strings.TrimSpace(a) == "" {
				return fmt.Errorf("server address list %q (--addr or $%s) has an empty address: want host:port,host:port,...", addr, envAddr)
			}
			if err := checkAddr(strings.TrimSpace(a)); err != nil {
				return err
			}
		}
		return nil
	}
	const want = "want host:port, such as 127.0.0.1:50051"
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && strings.Contains(ae.Err, "missing port") {
			return fmt.Errorf("server address %q (--addr or $%s): the port is missing; %s", addr, envAddr, want)
		}
		return fmt.Errorf("server address %q (--addr or $%s) is not host:port (%v): %s", addr, envAddr, err, want)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("server address %q (--addr or $%s): port %q is not a number from 1 to 65535: %s", addr, envAddr, port, want)
	}
	return nil
}

// loadTLS builds the client TLS configuration; nil (plaintext) when no TLS
// option is set.
func loadTLS(caFile, serverName string, on bool) (*tls.Config, error) {
	if caFile == "" && serverName == "" && !on {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// dial opens the connection unary commands use.
func (cc *clientConfig) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if cc.tls != nil {
		creds = credentials.NewTLS(cc.tls)
	}
	// One address, or several servers (package target): the same parsing,
	// resolver and balancing as the Go client's.
	t, err := target.Parse(cc.addr)
	if err != nil {
		return nil, err
	}
	opts := append(t.Options, grpc.WithTransportCredentials(creds))
	if t.Balanced {
		opts = append(opts, grpc.WithDefaultServiceConfig(target.ServiceConfig(true, "")))
	}
	conn, err := grpc.NewClient(t.Target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cc.addr, err)
	}
	return conn, nil
}

// stateOptions are the same settings for the Go client library (watch).
func (cc *clientConfig) stateOptions() []varbridge.Option {
	opts := []varbridge.Option{varbridge.WithSessionID(cc.session)}
	if cc.tls != nil {
		opts = append(opts, varbridge.WithTLS(cc.tls))
	}
	if cc.token != "" {
		opts = append(opts, varbridge.WithToken(cc.token))
	}
	return opts
}

// sessionUse says what a command does about its --session.
type sessionUse int

const (
	// noSession: the command names sessions itself (session ..., sessions).
	noSession sessionUse = iota
	// existingSession: the session must exist (get, list, delete, watch);
	// reading never creates one, so a mistyped --session fails NotFound.
	existingSession
	// createSession: the session is created when missing (register, set).
	createSession
)

// client is one command's connection to the server, bound to one session.
type client struct {
	cfg     *clientConfig
	conn    *grpc.ClientConn
	api     varbridgev1.BridgeServiceClient
	session string
	token   string
	out     io.Writer
	errOut  io.Writer
}

// run resolves the client flags, dials, applies --timeout, makes sure of the
// session as use says and calls fn. The connection is closed afterwards.
func (g *globalOptions) run(cmd *cobra.Command, use sessionUse, fn func(ctx context.Context, c *client) error) error {
	cc, err := g.resolve(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if cc.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cc.timeout)
		defer cancel()
	}
	conn, err := cc.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &client{
		cfg: cc, conn: conn, api: varbridgev1.NewBridgeServiceClient(conn),
		session: cc.session, token: cc.token, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(),
	}
	if use == createSession {
		if err := c.ensureSession(ctx); err != nil {
			return c.hint(err)
		}
	}
	return c.hint(fn(ctx, c))
}

// ensureSession creates the session when it does not exist. It never joins
// or creates behind the user's back on a server with auth: without a token
// the server refuses the look-up (Unauthenticated, with a hint), and a
// session it creates with a new token has that token printed on stderr
// rather than thrown away.
func (c *client) ensureSession(ctx context.Context) error {
	_, err := c.api.GetSession(c.ctx(ctx), &varbridgev1.GetSessionRequest{SessionId: c.session})
	if err == nil {
		return nil
	}
	if status.Code(err) != codes.NotFound {
		return opError("get session "+strconv.Quote(c.session), err)
	}
	resp, err := c.api.InitializeSession(c.ctx(ctx), &varbridgev1.InitializeSessionRequest{SessionId: c.session})
	if err != nil {
		return opError("create session "+strconv.Quote(c.session), err)
	}
	if tok := resp.GetSessionToken(); tok != "" {
		c.token = tok
		fmt.Fprintf(c.errOut, "created session %s; its token (pass it with --token or $%s): %s\n",
			quoteIfNeeded(c.session), envToken, tok)
	}
	return nil
}

// hint adds advice to the errors a user can fix: a missing or wrong token,
// or a server that is not there.
func (c *client) hint(err error) error {
	var he *hintError
	if err == nil || errors.As(err, &he) {
		return err
	}
	switch status.Code(err) {
	case codes.Unauthenticated:
		if c.token == "" {
			return &hintError{err, fmt.Sprintf("this server requires a session token: 'varbridge session init %s' "+
				"creates the session and prints its token; pass it with --token or $%s", quoteIfNeeded(c.session), envToken)}
		}
	case codes.PermissionDenied:
		return &hintError{err, fmt.Sprintf("the token given (--token or $%s) is not the one session %s was created with",
			envToken, quoteIfNeeded(c.session))}
	case codes.Unavailable:
		h := fmt.Sprintf("is 'varbridge serve' running at %s?", c.cfg.addr)
		if strings.Contains(c.cfg.addr, ",") {
			h = fmt.Sprintf("is 'varbridge serve' running at any of %s?", c.cfg.addr)
		}
		if c.cfg.tls == nil {
			h += " If it serves TLS, pass --tls-ca (or --tls)."
		}
		return &hintError{err, h}
	}
	return err
}

// ctx adds the token, when there is one, to an outgoing call's context.
func (c *client) ctx(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// printProtoJSON writes m as indented protobuf JSON (-o protojson, --json).
func (c *client) printProtoJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "%s\n", b)
	return err
}

// printVariable writes v in the command's output format; resp is the whole
// response, printed for -o protojson.
func (c *client) printVariable(v *varbridgev1.Variable, resp proto.Message, suffix string) error {
	switch c.cfg.output {
	case outProtoJSON:
		return c.printProtoJSON(resp)
	case outJSON:
		return printJSONLine(c.out, variableJSONOf(v))
	}
	_, err := fmt.Fprintln(c.out, variableLine(v)+suffix)
	return err
}

// variableLine is the readable one-line form of a variable, value whole:
//
//	temperature id=... type=float value=0.9 version=2 revision=3 source=cli
func variableLine(v *varbridgev1.Variable) string {
	var b strings.Builder
	b.WriteString(quoteIfNeeded(v.GetName()))
	value := values.FormatValue(v.GetValue())
	if _, isString := v.GetValue().GetKind().(*varbridgev1.Value_StringValue); isString {
		value = quoteIfNeeded(value)
	} // other kinds print as one word: numbers, true/false, compact JSON
	fmt.Fprintf(&b, " id=%s type=%s value=%s version=%d revision=%d",
		quoteIfNeeded(v.GetId()), values.TypeName(v.GetType()), value, v.GetVersion(), v.GetRevision())
	fmt.Fprintf(&b, " source=%s", quoteIfNeeded(v.GetSource()))
	return b.String()
}

// quoteIfNeeded quotes s (Go syntax) when it is empty or would not read back
// as one word: it has spaces, quotes, '=' or unprintable characters.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	if strings.ContainsAny(s, " \t\n\r\"'=\\`") || strconv.Quote(s) != `"`+s+`"` {
		return strconv.Quote(s)
	}
	return s
}

// parseMeta reads k=v pairs (from repeated --meta flags) into a map.
func parseMeta(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--meta %q: want key=value", p)
		}
		m[k] = v
	}
	return m, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// formatTime is t in RFC 3339 (UTC), or "-" when unset.
func formatTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}
