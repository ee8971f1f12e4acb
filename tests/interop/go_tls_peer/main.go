// A mutual-TLS server that authorises its clients the way a stock Dapr sidecar and go-spiffe
// do, with Go's standard library only (crypto/tls, crypto/x509): the client's certificate is
// verified against the roots given with the intermediates the client itself sends (Go builds
// the path from the peer's chain, not from issuers it holds), for client authentication, and
// its URI SAN must be the SPIFFE ID allowed. It is the independent peer issue 15 asks for: a
// client that sends only its leaf, signed by an issuer the server does not hold, is refused.
//
// Usage:
//
//	go_tls_peer -cert server-chain.pem -key server-key.pem -roots ca.pem \
//	    -allow spiffe://public/ns/default/app -listen 127.0.0.1:0
//
// Prints "listening ADDR", then per connection "accepted SPIFFE-ID chain=N" or
// "refused REASON", and answers an accepted client's HTTP request with
// "hello SPIFFE-ID chain=N (go_tls_peer: called as SPIFFE-ID on PATH)".
//
// The three files are read again for every handshake, as a workload reads the identity files
// its sidecar rotates and the trust bundle its CA publishes: a renewed certificate and a new
// root are used at once. A file that does not load (caught mid-rotation) leaves the last good
// one in use.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
)

func main() {
	certFile := flag.String("cert", "", "the server's certificate chain (PEM)")
	keyFile := flag.String("key", "", "the server's key (PEM)")
	rootsFile := flag.String("roots", "", "the trust anchors for clients (PEM)")
	allow := flag.String("allow", "", "the SPIFFE ID a client must have")
	listen := flag.String("listen", "127.0.0.1:0", "the address to listen on")
	flag.Parse()

	files := &identity{certFile: *certFile, keyFile: *keyFile, rootsFile: *rootsFile}
	if err := files.reload(); err != nil {
		fail("%v", err)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	config := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if err := files.reload(); err != nil {
				say("reload: %v (the last good files stay in use)", err)
			}
			pair, _ := files.current()
			return pair, nil
		},
		// Verified below, with the client's own intermediates.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, roots := files.current()
			id, err := verify(raw, roots, *allow)
			if err != nil {
				say("refused %v", err)
				return err
			}
			say("accepted %s chain=%d", id, len(raw))
			return nil
		},
	}
	ln, err := tls.Listen("tcp", *listen, config)
	if err != nil {
		fail("listen: %v", err)
	}
	say("listening %s", ln.Addr())
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chain := r.TLS.PeerCertificates
			id := chain[0].URIs[0]
			fmt.Fprintf(w, "hello %s chain=%d (go_tls_peer: called as %s on %s)\n",
				id, len(chain), id, r.URL.Path)
		}),
	}
	if err := server.Serve(ln); err != nil {
		fail("serve: %v", err)
	}
}

// identity is the server's certificate and the client roots, from files read again at every
// handshake; the last set that loaded stays in use.
type identity struct {
	certFile, keyFile, rootsFile string
	mu                           sync.Mutex
	pair                         *tls.Certificate
	roots                        *x509.CertPool
}

func (f *identity) reload() error {
	pair, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("server certificate: %v", err)
	}
	pem, err := os.ReadFile(f.rootsFile)
	if err != nil {
		return fmt.Errorf("roots: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("roots: no certificate in %s", f.rootsFile)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pair, f.roots = &pair, roots
	return nil
}

func (f *identity) current() (*tls.Certificate, *x509.CertPool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pair, f.roots
}

// verify checks the client's chain as go-spiffe's x509svid.Verify does: the leaf, with the
// rest of the peer's chain as intermediates, to the roots, for client authentication, and
// exactly one SPIFFE ID, the one allowed.
func verify(raw [][]byte, roots *x509.CertPool, allow string) (string, error) {
	if len(raw) == 0 {
		return "", errors.New("no client certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return "", fmt.Errorf("unparsable certificate: %v", err)
		}
		certs = append(certs, c)
	}
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("chain: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" {
		return "", errors.New("not an X509-SVID: it must have exactly one spiffe:// URI SAN")
	}
	id := leaf.URIs[0].String()
	if id != allow {
		return "", fmt.Errorf("SPIFFE ID %s is not allowed (want %s)", id, allow)
	}
	return id, nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go_tls_peer: "+strings.TrimSpace(format)+"\n", args...)
	os.Exit(1)
}
