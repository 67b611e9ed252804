defmodule ProtonStreamTest.CompilerTest do
  # The :ps_port mix compiler (elixir_shim/mix/ps_port_compiler.exs), run as
  # `mix compile` in a child process with its own MIX_BUILD_PATH so the suite's
  # build is untouched. A stand-in `go` (PS_PORT_GO) records how it was called.
  use ExUnit.Case, async: true

  import ProtonStreamTest.Helpers

  @shim_dir Path.expand("../../elixir_shim", __DIR__)
  @repo_root Path.expand("../..", __DIR__)

  setup do
    tmp = Path.join(System.tmp_dir!(), "proton_stream_compiler_test_#{rand_hex()}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)

    # A Go module root with the layout the compiler expects.
    src = Path.join(tmp, "src")
    File.mkdir_p!(Path.join(src, "cmd/ps_port"))
    File.cp!(Path.join(@repo_root, "go.mod"), Path.join(src, "go.mod"))
    File.write!(Path.join(src, "cmd/ps_port/main.go"), "package main\n\nfunc main() {}\n")
    # The limits table ps_port embeds and ProtonStream.Limits reads.
    File.mkdir_p!(Path.join(src, "internal/limits"))

    File.cp!(
      Path.join(@repo_root, "internal/limits/limits.txt"),
      Path.join(src, "internal/limits/limits.txt")
    )

    log = Path.join(tmp, "go.log")
    fake_go = Path.join(tmp, "go")

    File.write!(fake_go, """
    #!/bin/sh
    # go env, go list and go mod are recorded in go.log.other; builds in go.log.
    case "$1" in
      env)
        echo "${FAKE_GO_VERSION-go9.9.0}"; echo "${FAKE_GO_CACHE-/nonexistent}"; echo /fake/modcache
        exit 0 ;;
      list)
        echo "list GOPROXY=${GOPROXY-}" >> #{log}.other
        if [ -n "${FAKE_GO_MISSING-}" ]; then
          echo "go: example.com/m@v1.0.0: module lookup disabled by GOPROXY=off"; exit 1
        fi
        exit 0 ;;
      mod)
        echo "mod $*" >> #{log}.other
        if [ -n "${FAKE_GO_NO_NETWORK-}" ]; then echo "fake go: dial tcp: no network"; exit 1; fi
        exit 0 ;;
    esac
    echo "args: $*" >> #{log}
    echo "proxy: ${GOPROXY-}" >> #{log}
    echo "cwd: $(pwd)" >> #{log}
    echo "env: GOOS=${GOOS-} GOARCH=${GOARCH-} CGO_ENABLED=${CGO_ENABLED-}" >> #{log}
    if [ -n "${FAKE_GO_FAIL-}" ]; then echo "fake go: $FAKE_GO_FAIL"; exit 1; fi
    while [ $# -gt 0 ]; do
      if [ "$1" = "-o" ]; then
        case "$2" in
          */) echo fake > "$2ps_port"; echo fake > "$2ps_port_lean"; echo fake > "$2ps_port_node" ;;
          *) echo fake > "$2" ;;
        esac
      fi
      shift
    done
    """)

    File.chmod!(fake_go, 0o755)
    %{tmp: tmp, src: src, log: log, fake_go: fake_go, build: Path.join(tmp, "_build")}
  end

  defp mix_compile(ctx, env) do
    env =
      [
        {"MIX_BUILD_PATH", ctx.build},
        {"MIX_ENV", "dev"},
        {"PS_PORT_SRC", ctx.src},
        {"PS_PORT_GO", ctx.fake_go},
        {"GOOS", nil},
        {"GOARCH", nil},
        {"CGO_ENABLED", nil}
      ]
      |> Enum.reject(fn {key, _} -> List.keymember?(env, key, 0) end)
      |> Kernel.++(env)

    System.cmd("mix", ["compile"], cd: @shim_dir, env: env, stderr_to_stdout: true)
  end

  defp log_entries(log) do
    case File.read(log) do
      {:ok, text} -> text |> String.split("args: ", trim: true)
      {:error, :enoent} -> []
    end
  end

  defp binary(ctx), do: Path.join(ctx.build, "lib/proton_stream/priv/ps_port")

  test "builds into the app's priv/ with the documented flags, honouring GOOS/GOARCH/CGO_ENABLED",
       ctx do
    {out, 0} = mix_compile(ctx, [{"GOOS", "linux"}, {"GOARCH", "arm64"}])
    assert out =~ "Compiling ps_port"
    assert [entry] = log_entries(ctx.log)

    assert entry =~
             "build -trimpath -ldflags=-s -o #{Path.dirname(binary(ctx))}/ ./cmd/ps_port ./cmd/ps_port_lean ./cmd/ps_port_node\n"

    assert entry =~ "cwd: #{ctx.src}\n"
    # CGO_ENABLED defaults to 0.
    assert entry =~ "env: GOOS=linux GOARCH=arm64 CGO_ENABLED=0\n"
    assert File.read!(binary(ctx)) == "fake\n"

    # Up to date: nothing is built.
    {out, 0} = mix_compile(ctx, [{"GOOS", "linux"}, {"GOARCH", "arm64"}])
    refute out =~ "Compiling ps_port"
    assert length(log_entries(ctx.log)) == 1

    # Another target: rebuilt, and an explicit CGO_ENABLED is passed on.
    {out, 0} = mix_compile(ctx, [{"GOARCH", "riscv64"}, {"CGO_ENABLED", "1"}])
    assert out =~ "Compiling ps_port"
    assert [_, entry] = log_entries(ctx.log)
    assert entry =~ "env: GOOS= GOARCH=riscv64 CGO_ENABLED=1\n"

    # A touched but unchanged source: nothing to do. A changed one: rebuilt.
    main_go = Path.join(ctx.src, "cmd/ps_port/main.go")
    File.touch!(main_go, System.os_time(:second) + 60)
    {out, 0} = mix_compile(ctx, [{"GOARCH", "riscv64"}, {"CGO_ENABLED", "1"}])
    refute out =~ "Compiling ps_port"
    File.write!(main_go, "// changed\n", [:append])
    {out, 0} = mix_compile(ctx, [{"GOARCH", "riscv64"}, {"CGO_ENABLED", "1"}])
    assert out =~ "Compiling ps_port"
    assert length(log_entries(ctx.log)) == 3

    # The limits table is embedded in the binaries: a change to it is a
    # change to ps_port.
    File.write!(Path.join(ctx.src, "internal/limits/limits.txt"), "# changed\n", [:append])
    {out, 0} = mix_compile(ctx, [{"GOARCH", "riscv64"}, {"CGO_ENABLED", "1"}])
    assert out =~ "Compiling ps_port"
    assert length(log_entries(ctx.log)) == 4

    # A missing binary: rebuilt.
    File.rm!(binary(ctx))
    {out, 0} = mix_compile(ctx, [{"GOARCH", "riscv64"}, {"CGO_ENABLED", "1"}])
    assert out =~ "Compiling ps_port"
    assert File.exists?(binary(ctx))

    # So is a missing ps_port_node (node mode, which ps_port node execs).
    File.rm!(binary(ctx) <> "_node")
    {out, 0} = mix_compile(ctx, [{"GOARCH", "riscv64"}, {"CGO_ENABLED", "1"}])
    assert out =~ "Compiling ps_port"
    assert File.exists?(binary(ctx) <> "_node")

    # And a missing ps_port_lean (what isolated children without a cgroup
    # run).
    File.rm!(binary(ctx) <> "_lean")
    {out, 0} = mix_compile(ctx, [{"GOARCH", "riscv64"}, {"CGO_ENABLED", "1"}])
    assert out =~ "Compiling ps_port"
    assert File.exists?(binary(ctx) <> "_lean")
  end

  test "says what it builds and how long it takes; a cold cache is named as such", ctx do
    cache = Path.join(ctx.tmp, "gocache")
    File.mkdir_p!(Path.join(cache, "00"))
    {out, 0} = mix_compile(ctx, [{"FAKE_GO_CACHE", cache}, {"FAKE_GO_VERSION", "go9.9.0"}])
    assert out =~ "Compiling ps_port, proton_stream's Go helper, with go9.9.0"
    assert out =~ "first Go build on this machine"
    assert out =~ "1-3 minutes"
    assert out =~ ~r/Compiled ps_port in \d+ s/
  end

  test "offline once the modules are there: the build runs with GOPROXY=off", ctx do
    {_out, 0} = mix_compile(ctx, [])
    assert File.read!(ctx.log <> ".other") =~ "list GOPROXY=off"
    assert [entry] = log_entries(ctx.log)
    assert entry =~ "proxy: off\n"
  end

  test "missing modules are downloaded first, with the configured proxy", ctx do
    {out, 0} = mix_compile(ctx, [{"FAKE_GO_MISSING", "1"}, {"GOPROXY", "https://proxy.example"}])
    assert out =~ "Downloading the Go modules ps_port needs"
    assert File.read!(ctx.log <> ".other") =~ "mod mod download"
    assert [entry] = log_entries(ctx.log)
    assert entry =~ "proxy: https://proxy.example\n"
  end

  test "missing modules that cannot be downloaded: the error says how to get them", ctx do
    {out, status} = mix_compile(ctx, [{"FAKE_GO_MISSING", "1"}, {"FAKE_GO_NO_NETWORK", "1"}])
    assert status != 0
    assert out =~ "the Go modules it needs are not in the module cache"
    assert out =~ "fake go: dial tcp: no network"
    assert out =~ "go mod download"
    assert out =~ "go mod vendor"
    assert out =~ "/fake/modcache"
    assert log_entries(ctx.log) == []
  end

  test "a Go older than go.mod's go line is a clear compile error", ctx do
    {out, status} = mix_compile(ctx, [{"FAKE_GO_VERSION", "go1.2.3"}])
    assert status != 0
    [_, go_version] = Regex.run(~r/^go\s+(\S+)/m, File.read!(Path.join(@repo_root, "go.mod")))
    assert out =~ "it needs Go #{go_version} or newer"
    assert out =~ "go1.2.3"
    assert log_entries(ctx.log) == []
  end

  test "the READMEs name go.mod's Go version" do
    [_, version] = Regex.run(~r/^go\s+(\d+\.\d+)/m, File.read!(Path.join(@repo_root, "go.mod")))
    assert File.read!(Path.join(@repo_root, "README.md")) =~ "Go (≥ #{version},"
  end

  test "a failing go build is a compile error showing go's output", ctx do
    {out, status} = mix_compile(ctx, [{"FAKE_GO_FAIL", "syntax error in main.go"}])
    assert status != 0
    assert out =~ "could not build ps_port"
    assert out =~ "fake go: syntax error in main.go"
  end

  test "a missing Go toolchain is a clear compile error", ctx do
    # A PATH with everything from the usual directories except go.
    path_dir = Path.join(ctx.tmp, "path")
    File.mkdir_p!(path_dir)

    for dir <- ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"],
        {:ok, names} <- [File.ls(dir)],
        name <- names,
        name not in ["go", "gofmt"] do
      File.ln_s(Path.join(dir, name), Path.join(path_dir, name))
    end

    {out, status} = mix_compile(ctx, [{"PATH", path_dir}, {"PS_PORT_GO", nil}, {"GOROOT", nil}])
    assert status != 0
    [_, go_version] = Regex.run(~r/^go\s+(\S+)/m, File.read!(Path.join(@repo_root, "go.mod")))
    assert out =~ "the Go toolchain was not found"
    assert out =~ "Install Go #{go_version} or newer"
    assert out =~ "PATH"
  end

  test "a missing Go module root is a clear compile error", ctx do
    {out, status} = mix_compile(ctx, [{"PS_PORT_SRC", ctx.tmp}])
    assert status != 0
    assert out =~ "go.mod does not exist"
    assert out =~ "PS_PORT_SRC"
  end
end
