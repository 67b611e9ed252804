defmodule Mix.Tasks.Compile.PsPort do
  @shortdoc "Builds the ps_port helper with `go build` into priv/"

  @moduledoc """
  Builds the Go helper `ps_port` into the application's `priv/ps_port`.

  Runs, in the repository root (the directory above `elixir_shim/` that holds
  `go.mod`, or `$PS_PORT_SRC` when set):

      go build -trimpath -ldflags=-s -o <app>/priv/ps_port ./cmd/ps_port

  `GOOS`, `GOARCH`, `GOARM` and `CGO_ENABLED` are taken from the environment so
  cross builds (Nerves and the like) work; `CGO_ENABLED` defaults to `0`. The
  binary is rebuilt only when it is missing, when a Go source file, `go.mod` or
  `go.sum` changed (by content) since the last build, or when one of those
  environment variables did. `mix compile --force` always rebuilds.

  Environment:

    * `PS_PORT_SRC` - the Go module root to build from (for git dependencies
      with `subdir:` whose layout differs from this repository's)
    * `PS_PORT_GO` - the `go` executable to use (default: `go` on `PATH`, then
      `$GOROOT/bin/go`)
  """

  use Mix.Task.Compiler

  @repo_root Path.expand("../..", __DIR__)
  @env_keys ~w(GOOS GOARCH GOARM GOAMD64 CGO_ENABLED)

  @impl Mix.Task.Compiler
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, switches: [force: :boolean])
    src = source_dir()
    out = binary_path()
    stamp = {build_env(), sources_digest(src)}

    if opts[:force] || not File.regular?(out) || read_manifest() != stamp do
      build!(src, out, stamp)
      {:ok, []}
    else
      {:noop, []}
    end
  end

  @impl Mix.Task.Compiler
  def manifests, do: [manifest_path()]

  @impl Mix.Task.Compiler
  def clean do
    File.rm(binary_path())
    File.rm(manifest_path())
    :ok
  end

  defp source_dir do
    src = System.get_env("PS_PORT_SRC") || @repo_root

    if not File.regular?(Path.join(src, "go.mod")) do
      Mix.raise(
        "cannot build ps_port: #{Path.join(src, "go.mod")} does not exist. " <>
          "Set PS_PORT_SRC to the directory that holds ps_port's go.mod."
      )
    end

    src
  end

  defp binary_path, do: Path.join(Mix.Project.app_path(), "priv/ps_port")

  defp manifest_path, do: Path.join(Mix.Project.manifest_path(), "compile.ps_port")

  defp build_env do
    env = Enum.map(@env_keys, &{&1, System.get_env(&1)})
    List.keystore(env, "CGO_ENABLED", 0, {"CGO_ENABLED", System.get_env("CGO_ENABLED") || "0"})
  end

  # A digest of every Go source (with its path), go.mod and go.sum: the binary
  # is rebuilt when any of them changed since the last build (mtimes have a
  # one-second resolution and go backwards on checkouts; contents do not).
  defp sources_digest(src) do
    src
    |> go_sources()
    |> Enum.sort()
    |> Enum.reduce(:erlang.md5_init(), fn path, md5 ->
      content =
        case File.read(path) do
          {:ok, content} -> content
          {:error, _} -> ""
        end

      md5 |> :erlang.md5_update(Path.relative_to(path, src)) |> :erlang.md5_update(content)
    end)
    |> :erlang.md5_final()
  end

  defp go_sources(src) do
    [Path.join(src, "go.mod"), Path.join(src, "go.sum") | walk(src)]
  end

  # Every .go file under dir, skipping hidden directories and the ones that
  # never hold ps_port's sources (a chroot or _build can be huge).
  defp walk(dir) do
    case File.ls(dir) do
      {:ok, names} -> Enum.flat_map(names, &walk_entry(dir, &1))
      {:error, _} -> []
    end
  end

  defp walk_entry(_dir, "." <> _), do: []

  defp walk_entry(_dir, name) when name in ~w(_build deps elixir_shim node_modules testdata),
    do: []

  defp walk_entry(dir, name) do
    path = Path.join(dir, name)

    cond do
      String.ends_with?(name, ".go") -> [path]
      File.dir?(path) and not symlink?(path) -> walk(path)
      true -> []
    end
  end

  defp symlink?(path), do: match?({:ok, %{type: :symlink}}, File.lstat(path))

  defp read_manifest do
    with {:ok, bin} <- File.read(manifest_path()),
         {:ok, term} <- safe_binary_to_term(bin) do
      term
    else
      _ -> nil
    end
  end

  defp safe_binary_to_term(bin) do
    {:ok, :erlang.binary_to_term(bin)}
  rescue
    ArgumentError -> :error
  end

  defp build!(src, out, stamp) do
    go = go_executable!(src)
    File.mkdir_p!(Path.dirname(out))
    args = ["build", "-trimpath", "-ldflags=-s", "-o", out, "./cmd/ps_port"]
    {build_env, _digest} = stamp
    env = for {key, value} <- build_env, value != nil, do: {key, value}
    Mix.shell().info("Compiling ps_port (go #{Enum.join(args, " ")})")

    case System.cmd(go, args, cd: src, env: env, stderr_to_stdout: true) do
      {_, 0} ->
        File.mkdir_p!(Path.dirname(manifest_path()))
        File.write!(manifest_path(), :erlang.term_to_binary(stamp))

      {output, status} ->
        Mix.raise("""
        could not build ps_port: `go #{Enum.join(args, " ")}` in #{src} exited with status #{status}:

        #{output}
        """)
    end
  end

  defp go_executable!(src) do
    candidates = [
      System.get_env("PS_PORT_GO"),
      System.find_executable("go"),
      System.get_env("GOROOT") && Path.join(System.get_env("GOROOT"), "bin/go")
    ]

    case Enum.find(candidates, &(&1 && File.regular?(&1))) do
      nil ->
        Mix.raise("""
        could not build ps_port: the Go toolchain was not found.

        proton_stream compiles its helper program ps_port from Go sources when it
        is compiled. Install Go #{go_version(src)} or newer (https://go.dev/dl/) and
        put its bin directory on PATH, for example:

            export PATH="$PATH:/usr/local/go/bin"

        or point PS_PORT_GO at the go executable.
        """)

      go ->
        go
    end
  end

  # The minimum Go version is whatever go.mod's `go` directive says.
  defp go_version(src) do
    with {:ok, gomod} <- File.read(Path.join(src, "go.mod")),
         [_, version] <- Regex.run(~r/^go\s+(\S+)/m, gomod) do
      version
    else
      _ -> "1.24"
    end
  end
end
