// The Go peer: a TCP proxy the way the reference implementation relays, io.Copy both ways
// (which splices between two *net.TCPConn on Linux). Stdlib only.
// Usage: goproxy LISTEN_ADDR:PORT BACKEND_ADDR:PORT   (prints "ready")
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func pipe(dst, src *net.TCPConn, done chan<- struct{}) {
	io.Copy(dst, src)
	dst.CloseWrite()
	done <- struct{}{}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: goproxy LISTEN BACKEND")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	backend := os.Args[2]
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			u, err := net.Dial("tcp", backend)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go pipe(u.(*net.TCPConn), c.(*net.TCPConn), done)
			go pipe(c.(*net.TCPConn), u.(*net.TCPConn), done)
			<-done
			<-done
		}(c)
	}
}
