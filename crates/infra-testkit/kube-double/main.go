// Command infra-kube-double is a test double of a Kubernetes API server plus
// kubelet for Infra's tests: there is no kubelet on a test machine, so the
// streaming subresources (exec, attach, port-forward, logs -f) of a real
// kube-apiserver cannot reach a pod. This double serves just enough API for
// the real kubectl, and answers the streaming upgrades with the kubelet's own
// code (vendored Kubernetes 1.20) so the wire protocols are the real ones.
// It checks the bearer token and the impersonation headers that the Infra
// connector sets, and logs what it received to stderr.
//
// Built by scripts/kube-double inside the Kubernetes source tree (GOPATH
// mode, vendor/), so it is not part of any Go module of ours.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/util/wsstream"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubernetes/pkg/kubelet/cri/streaming/portforward"
	remotecommandserver "k8s.io/kubernetes/pkg/kubelet/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	// kubectl >= 1.30 offers only this protocol over WebSocket for exec and
	// attach; 1.20's kubelet code predates it (it is v4 plus a CLOSE signal).
	v5Protocol = "v5.channel.k8s.io"
	// kubectl >= 1.31 tunnels SPDY port-forward through a WebSocket.
	tunnelProtocol = "SPDY/3.1+" + portforward.ProtocolV1Name
	// The kubelet's defaults (streaming-connection-idle-timeout, and the
	// streaming server's stream creation timeout).
	idleTimeout           = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
	container             = "main"
)

// The 1.20 kubelet's WebSocket subprotocols for exec/attach and for
// port-forward ("": none offered).
var legacyWS = []string{"", "channel.k8s.io", "base64.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"}
var legacyPortForwardWS = []string{"", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"}

type server struct {
	kubelet    bool // serves the kubelet's /exec and /attach to the API server
	token      string
	user       string
	groups     []string // sorted; nil = not checked
	websockets bool
	version    version.Info
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: pick one; the URL is printed on stdout)")
	certFile := flag.String("cert", "", "TLS certificate PEM (default: a fresh self-signed one)")
	keyFile := flag.String("key", "", "TLS key PEM (with --cert)")
	writeCA := flag.String("write-ca", "", "where to write the self-signed certificate (the CA for clients) when --cert is absent")
	token := flag.String("token", "", "the only bearer token accepted (401 otherwise); empty: no Authorization required")
	user := flag.String("expect-user", "", "required Impersonate-User (403 otherwise); empty: not checked")
	groups := flag.String("expect-groups", "", "comma-separated set of Impersonate-Group values required exactly (403 otherwise); unset: not checked")
	ver := flag.String("version", "v1.31.0", "gitVersion reported by /version (kubectl's version dispatcher picks its kubectl by it)")
	kubeletCA := flag.String("kubelet-client-ca", "", "also serve the kubelet's /exec and /attach paths, only to clients (the API server) with a certificate from this CA")
	ws := flag.Bool("websockets", true, "serve kubectl >= 1.30's WebSocket protocols (exec/attach "+v5Protocol+", port-forward "+tunnelProtocol+"); false answers like a pre-1.30 server, so kubectl falls back to SPDY")
	flag.Parse()

	s := &server{kubelet: *kubeletCA != "", token: *token, user: *user, websockets: *ws, version: versionInfo(*ver)}
	if flagSet("expect-groups") {
		s.groups = splitSorted(*groups)
	}
	var cert tls.Certificate
	var err error
	if *certFile != "" {
		cert, err = tls.LoadX509KeyPair(*certFile, *keyFile)
	} else {
		cert, err = selfSigned(*writeCA)
	}
	if err != nil {
		log.Fatalf("certificate: %v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	// Tests read this line to learn the port (and that we are ready).
	fmt.Printf("https://%s\n", ln.Addr())
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}}
	if *kubeletCA != "" {
		pem, err := ioutil.ReadFile(*kubeletCA)
		if err != nil {
			log.Fatalf("kubelet client CA: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("kubelet client CA: no certificate in %s", *kubeletCA)
		}
		// As a kubelet: the API server proves itself with a client
		// certificate; API-style requests (from the connector) carry none.
		tlsConfig.ClientCAs = pool
		tlsConfig.ClientAuth = tls.VerifyClientCertIfGiven
	}
	srv := &http.Server{Handler: s, TLSConfig: tlsConfig, ErrorLog: log.New(ioutil.Discard, "", 0)}
	log.Fatal(srv.ServeTLS(ln, "", ""))
}

func (s *server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &logWriter{ResponseWriter: rw, r: r}
	offered := offeredProtocols(r)
	log.Printf("%s %s authorization=%v impersonate-user=%q impersonate-group=%q upgrade=%q protocols=%q user-agent=%q",
		r.Method, r.URL.RequestURI(), r.Header.Get("Authorization") != "",
		r.Header.Get("Impersonate-User"), r.Header.Values("Impersonate-Group"), r.Header.Get("Upgrade"), offered, r.UserAgent())

	switch r.URL.Path {
	// Readable by anyone on a real cluster (system:public-info-viewer), so
	// health probes need neither token nor impersonation.
	case "/version", "/version/":
		writeJSON(w, http.StatusOK, s.version)
		return
	case "/healthz", "/livez", "/readyz":
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
		return
	}
	if s.kubelet && (strings.HasPrefix(r.URL.Path, "/exec/") || strings.HasPrefix(r.URL.Path, "/attach/")) {
		s.kubeletStream(w, r)
		return
	}
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return
	}
	if msg := s.checkImpersonation(r); msg != "" {
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, msg)
		return
	}

	// /api/v1/namespaces/{ns}/pods[/{name}[/{subresource}]]: every pod
	// exists (a list shows one, "web") and is Running with one container.
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	pods := len(p) >= 5 && p[0] == "api" && p[1] == "v1" && p[2] == "namespaces" && p[4] == "pods"
	switch {
	case r.URL.Path == "/api":
		writeJSON(w, http.StatusOK, metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
	case r.URL.Path == "/apis":
		writeJSON(w, http.StatusOK, metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}})
	case r.URL.Path == "/api/v1":
		writeJSON(w, http.StatusOK, resources())
	case pods && len(p) == 5:
		writeJSON(w, http.StatusOK, corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: []corev1.Pod{pod(p[3], "web")}})
	case pods && len(p) == 6:
		writeJSON(w, http.StatusOK, pod(p[3], p[5]))
	case pods && len(p) == 7:
		s.subresource(w, r, p[3], p[5], p[6])
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
	}
}

// kubeletStream serves /exec/{ns}/{pod}/{container} and /attach/..., as the
// kubelet does for the API server, which has already authorized the user
// (RBAC on pods/exec for the impersonated user) and rewritten the query
// into the kubelet's (input=1, output=1, tty=1, command=...).
func (s *server) kubeletStream(w *logWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "the kubelet serves only the API server, which proves itself with its client certificate")
		return
	}
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(p) != 4 || p[3] != container {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "no such pod or container on this kubelet")
		return
	}
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	s.stream(w, r, p[0], p[2], opts)
}

// checkImpersonation returns why the request's impersonation headers are not
// the expected ones ("" if they are).
func (s *server) checkImpersonation(r *http.Request) string {
	got := r.Header.Get("Impersonate-User")
	gotGroups := splitSorted(strings.Join(r.Header.Values("Impersonate-Group"), ","))
	if s.user != "" && got != s.user {
		return fmt.Sprintf("impersonation mismatch: expected Impersonate-User %q, got %q (Impersonate-Group %q)", s.user, got, gotGroups)
	}
	if s.groups != nil && strings.Join(gotGroups, ",") != strings.Join(s.groups, ",") {
		return fmt.Sprintf("impersonation mismatch: expected Impersonate-Group %q, got %q (Impersonate-User %q)", s.groups, gotGroups, got)
	}
	return ""
}

func (s *server) subresource(w *logWriter, r *http.Request, ns, name, sub string) {
	if c := r.URL.Query().Get("container"); c != "" && c != container {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("container %s is not valid for pod %s", c, name))
		return
	}
	uid := types.UID("uid-" + ns + "-" + name)
	ws := wsstream.IsWebSocketRequest(r)
	switch sub {
	case "log":
		serveLog(w, r, ns, name)
	case "exec", "attach":
		opts, err := streamOptions(r)
		if err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		s.stream(w, r, sub, name, opts)
	case "portforward":
		var opts *portforward.V4Options
		switch {
		case ws && s.websockets && offers(r, tunnelProtocol):
			serveTunnel(w, r, name, uid)
			return
		case ws && !offers(r, legacyPortForwardWS...):
			refuseWebSocket(w, r)
			return
		case ws:
			var err error
			if opts, err = portforward.NewV4Options(r); err != nil {
				writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
				return
			}
		}
		portforward.ServePortForward(w, r, localForwarder{}, name, uid, opts, idleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
	}
}

// stream answers an exec or attach upgrade with the kubelet's code (or the
// v5 WebSocket protocol the 1.20 code predates).
func (s *server) stream(w *logWriter, r *http.Request, sub, name string, opts *remotecommandserver.Options) {
	uid := types.UID("uid-" + name)
	ws := wsstream.IsWebSocketRequest(r)
	cmd := r.URL.Query()["command"]
	run := func(in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
		if sub == "attach" {
			return attach(in, out, tty, resize)
		}
		return runLocal(cmd, in, out, errOut, tty, resize)
	}
	switch {
	case ws && s.websockets && offers(r, v5Protocol):
		serveV5(w, r, opts, run)
	case ws && !offers(r, legacyWS...):
		refuseWebSocket(w, r)
	case sub == "exec":
		remotecommandserver.ServeExec(w, r, executor(run), name, uid, container, cmd, opts, idleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
	default:
		remotecommandserver.ServeAttach(w, r, executor(run), name, uid, container, opts, idleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
	}
}

// streamOptions reads the API's PodExecOptions/PodAttachOptions query
// (stdin=true...); the apiserver rewrites it into the kubelet's own query
// (input=1...) that remotecommand.NewOptions reads, so we do that part here.
func streamOptions(r *http.Request) (*remotecommandserver.Options, error) {
	q := r.URL.Query()
	flag := func(name string) bool { b, _ := strconv.ParseBool(q.Get(name)); return b }
	o := &remotecommandserver.Options{Stdin: flag("stdin"), Stdout: flag("stdout"), Stderr: flag("stderr"), TTY: flag("tty")}
	if o.TTY {
		o.Stderr = false // as the kubelet: a TTY merges stderr into stdout
	}
	if !o.Stdin && !o.Stdout && !o.Stderr {
		return nil, errors.New("you must specify at least 1 of stdin, stdout, stderr")
	}
	return o, nil
}

// serveLog imitates a container that logs a line a second.
func serveLog(w *logWriter, r *http.Request, ns, name string) {
	follow := r.URL.Query().Get("follow") == "true"
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	for i := 1; ; i++ {
		fmt.Fprintf(w, "log line %d from %s/%s container %s\n", i, ns, name, container)
		w.Flush()
		if !follow && i == 3 {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// executor adapts one function to the kubelet's Executor and Attacher.
type executor func(in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error

func (f executor) ExecInContainer(_ string, _ types.UID, _ string, _ []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	return f(in, out, errOut, tty, resize)
}

func (f executor) AttachContainer(_ string, _ types.UID, _ string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return f(in, out, errOut, tty, resize)
}

// runLocal runs the command on this machine: the "container" is the host.
func runLocal(cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	drain(resize)
	if len(cmd) == 0 {
		return errors.New("no command given")
	}
	c := exec.Command(cmd[0], cmd[1:]...)
	if out != nil {
		c.Stdout = out
	}
	if tty && out != nil { // a TTY has one output stream (we do not allocate a pty)
		c.Stderr = out
	} else if errOut != nil {
		c.Stderr = errOut
	}
	// Not c.Stdin = in: Wait would then wait for the client to close stdin,
	// while the kubelet returns as soon as the process exits.
	var stdin io.WriteCloser
	if in != nil {
		var err error
		if stdin, err = c.StdinPipe(); err != nil {
			return err
		}
	}
	if err := c.Start(); err != nil {
		return err
	}
	if stdin != nil {
		go func() { io.Copy(stdin, in); stdin.Close() }()
	}
	err := c.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		// ServeExec turns a utilexec.ExitError into the NonZeroExitCode status.
		return &utilexec.ExitErrorWrapper{ExitError: ee}
	}
	return err
}

// attach imitates attaching to a container whose process echoes its stdin.
func attach(in io.Reader, out io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	drain(resize)
	if out == nil {
		out = nopCloser{ioutil.Discard}
	}
	fmt.Fprintf(out, "attached to container %s\n", container)
	if in != nil {
		io.Copy(out, in)
	}
	return nil
}

// drain consumes resize events: the kubelet code sends them unbuffered, and an
// unread one would stall the connection.
func drain(resize <-chan remotecommand.TerminalSize) {
	if resize != nil {
		go func() {
			for range resize {
			}
		}()
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// serveV5 serves exec/attach over WebSocket v5.channel.k8s.io, which is the
// 1.20 kubelet's v4 framing plus one addition: a message on channel 255
// carrying a stream id half-closes that stream (kubectl sends it when stdin
// ends). 1.20's wsstream.Conn has channels but no such signal, so channel 255
// is opened as an ordinary read channel and the signal is acted on here.
func serveV5(w http.ResponseWriter, r *http.Request, opts *remotecommandserver.Options, run executor) {
	const stdin, stdout, stderr, errCh, closeCh = 0, 1, 2, 3, 255
	channels := make([]wsstream.ChannelType, 256) // all IgnoreChannel, resize (4) included: no pty here
	if opts.Stdin {
		channels[stdin] = wsstream.ReadChannel
	}
	if opts.Stdout {
		channels[stdout] = wsstream.WriteChannel
	}
	if opts.Stderr {
		channels[stderr] = wsstream.WriteChannel
	}
	channels[errCh] = wsstream.WriteChannel
	channels[closeCh] = wsstream.ReadChannel
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{v5Protocol: {Binary: true, Channels: channels}})
	conn.SetIdleTimeout(idleTimeout)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		return
	}
	defer conn.Close()
	log.Printf("%s: websocket %s", r.URL.Path, v5Protocol)
	go func() {
		id := make([]byte, 1)
		for {
			if _, err := streams[closeCh].Read(id); err != nil {
				return
			}
			streams[id[0]].Close() // closing a read channel ends it with EOF
		}
	}()
	// As the kubelet does: an empty message on the lowest writable channel
	// tells the client the streams are ready.
	switch {
	case opts.Stdout:
		streams[stdout].Write([]byte{})
	case opts.Stderr:
		streams[stderr].Write([]byte{})
	default:
		streams[errCh].Write([]byte{})
	}
	var in io.Reader
	if opts.Stdin {
		in = streams[stdin]
	}
	st := exitStatus(run(in, streams[stdout], streams[stderr], opts.TTY, nil))
	b, _ := json.Marshal(st)
	streams[errCh].Write(b)
}

// exitStatus is the v4/v5 error-channel status for an exec's outcome, built
// as the kubelet's ServeExec builds it.
func exitStatus(err error) metav1.Status {
	if err == nil {
		return metav1.Status{Status: metav1.StatusSuccess}
	}
	if ee, ok := err.(utilexec.ExitError); ok && ee.Exited() {
		return metav1.Status{
			Status: metav1.StatusFailure,
			Reason: remotecommandconsts.NonZeroExitCodeReason,
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{
				{Type: remotecommandconsts.ExitCodeCauseType, Message: fmt.Sprintf("%d", ee.ExitStatus())}}},
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", ee),
		}
	}
	return apierrors.NewInternalError(fmt.Errorf("error executing command in container: %v", err)).Status()
}

// serveTunnel serves kubectl >= 1.31's port-forward: a WebSocket whose binary
// messages carry an SPDY session's bytes. The apiserver unwraps it and talks
// SPDY to the kubelet; here the kubelet's SPDY code gets the WebSocket as its
// hijacked connection, behind a request that looks like a plain SPDY upgrade.
func serveTunnel(w http.ResponseWriter, r *http.Request, name string, uid types.UID) {
	websocket.Server{
		Handshake: func(c *websocket.Config, _ *http.Request) error {
			c.Protocol = []string{tunnelProtocol}
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			log.Printf("%s: websocket %s", r.URL.Path, tunnelProtocol)
			ws.PayloadType = websocket.BinaryFrame
			inner := r.Clone(r.Context())
			inner.Header = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"},
				"X-Stream-Protocol-Version": {portforward.ProtocolV1Name}}
			portforward.ServePortForward(&tunnelWriter{conn: ws, h: http.Header{}}, inner, localForwarder{}, name, uid, nil,
				idleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
		},
	}.ServeHTTP(w, r)
}

// tunnelWriter swallows the SPDY upgrade response (the WebSocket handshake
// already answered) and hands out the WebSocket as the hijacked connection.
type tunnelWriter struct {
	conn net.Conn
	h    http.Header
}

func (t *tunnelWriter) Header() http.Header         { return t.h }
func (t *tunnelWriter) Write(b []byte) (int, error) { return len(b), nil }
func (t *tunnelWriter) WriteHeader(int)             {}
func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return t.conn, bufio.NewReadWriter(bufio.NewReader(t.conn), bufio.NewWriter(t.conn)), nil
}

// refuseWebSocket answers a WebSocket upgrade offering no protocol we speak
// the way the kubelet's x/net/websocket handshake does (a bare 403), which is
// what makes kubectl fall back to SPDY. (Handing it to the 1.20 code would
// answer the same but leak a goroutine blocked forever in wsstream.Conn.Open.)
func refuseWebSocket(w http.ResponseWriter, r *http.Request) {
	log.Printf("%s: websocket protocols %q refused (client should fall back to SPDY)", r.URL.Path, offeredProtocols(r))
	w.WriteHeader(http.StatusForbidden)
}

// localForwarder is the kubelet's port forwarding with the host as the pod's
// network namespace.
type localForwarder struct{}

func (localForwarder) PortForward(_ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	defer c.Close()
	go func() {
		io.Copy(c, stream)
		c.(*net.TCPConn).CloseWrite()
	}()
	_, err = io.Copy(stream, c)
	return err
}

// logWriter logs each response's status and, for SPDY upgrades, the
// negotiated protocol; it keeps the Hijacker and Flusher of the writer it wraps.
type logWriter struct {
	http.ResponseWriter
	r *http.Request
}

func (w *logWriter) WriteHeader(code int) {
	if p := w.Header().Get("X-Stream-Protocol-Version"); code == http.StatusSwitchingProtocols && p != "" {
		log.Printf("%s: %s %s", w.r.URL.Path, w.Header().Get("Upgrade"), p)
	} else if code >= 300 {
		log.Printf("%s: %d", w.r.URL.Path, code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked (HTTP/2?)")
	}
	return h.Hijack()
}

func offeredProtocols(r *http.Request) []string {
	var out []string
	for _, h := range []string{"Sec-Websocket-Protocol", "X-Stream-Protocol-Version"} {
		for _, v := range r.Header.Values(h) {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// offers tells whether a WebSocket request offers one of the subprotocols
// ("" matches a request offering none).
func offers(r *http.Request, protocols ...string) bool {
	offered := strings.Join(r.Header.Values("Sec-Websocket-Protocol"), ",")
	for _, o := range strings.Split(offered, ",") {
		for _, p := range protocols {
			if strings.TrimSpace(o) == p {
				return true
			}
		}
	}
	return false
}

func pod(ns, name string) corev1.Pod {
	now := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	return corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + ns + "-" + name), CreationTimestamp: now},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: container, Image: "infra-kube-double"}}, NodeName: "double"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", StartTime: &now,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: container, Ready: true, Image: "infra-kube-double",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}},
	}
}

// resources is the core group's discovery, limited to what kubectl needs to
// resolve pods and their streaming subresources.
func resources() metav1.APIResourceList {
	sub := func(name, kind string, verbs ...string) metav1.APIResource {
		return metav1.APIResource{Name: name, Namespaced: true, Kind: kind, Verbs: verbs}
	}
	pods := sub("pods", "Pod", "get", "list")
	pods.SingularName, pods.ShortNames, pods.Categories = "pod", []string{"po"}, []string{"all"}
	return metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{pods,
			sub("pods/attach", "PodAttachOptions", "create", "get"),
			sub("pods/exec", "PodExecOptions", "create", "get"),
			sub("pods/log", "Pod", "get"),
			sub("pods/portforward", "PodPortForwardOptions", "create", "get")},
	}
}

func versionInfo(v string) version.Info {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	for len(parts) < 2 {
		parts = append(parts, "0")
	}
	return version.Info{Major: parts[0], Minor: parts[1], GitVersion: v, GitCommit: "infra-kube-double", GitTreeState: "clean",
		BuildDate: "2021-01-13T00:00:00Z", GoVersion: goruntime.Version(), Compiler: goruntime.Compiler,
		Platform: goruntime.GOOS + "/" + goruntime.GOARCH}
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code)})
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// selfSigned makes a certificate that is its own CA (so it can be handed to
// clients as certificate-authority) for 127.0.0.1, ::1 and localhost.
func selfSigned(caPath string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "infra-kube-double"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if caPath != "" {
		if err := ioutil.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return tls.Certificate{}, err
		}
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func flagSet(name string) (set bool) {
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return
}

func splitSorted(s string) []string {
	out := []string{}
	for _, g := range strings.Split(s, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	sort.Strings(out)
	return out
}

func init() {
	log.SetOutput(os.Stderr)
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("kube-double: ")
}
