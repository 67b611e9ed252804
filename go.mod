module github.com/protonstream/ps_port

go 1.26.0

require (
	github.com/containerd/cgroups/v3 v3.1.3
	github.com/ergo-services/ergo v1.999.224
	golang.org/x/sys v0.49.0
)
