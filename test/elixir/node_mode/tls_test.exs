defmodule ProtonStreamTest.NodeMode.TLSTest do
  # ProtonStream.Node with tls: a VM on OTP's TLS distribution starts a ps_port
  # node that speaks it and runs programs there; the :tls option is checked
  # against the VM's distribution. The TLS VM is a second VM (this suite's
  # VM runs plain distribution), started with `elixir --erl`.
  use ExUnit.Case, async: true
  @moduletag :node

  import ProtonStreamTest.Helpers

  @script ~S"""
  [ps_cert, ps_key, ca, other_ca] = System.argv()
  Process.flag(:trap_exit, true)
  {:ok, _} = Application.ensure_all_started(:proton_stream)
  tls = [certfile: ps_cert, keyfile: ps_key, cacertfile: ca]
  {:ok, server} = ProtonStream.Node.start_link(allow_any: true, tls: tls)
  ps_node = ProtonStream.Node.name(server)
  {:ok, ps} = ProtonStream.open("cat", [], node: ps_node)
  ProtonStream.command(ps, "over tls\n")
  data = receive do {^ps, {:data, d}} -> d after 30_000 -> :timeout end
  {:ok, info} = :net_kernel.node_info(ps_node)
  ProtonStream.eof(ps)
  exit = receive do {:EXIT, ^ps, r} -> r after 30_000 -> :timeout end

  result = %{
    data: data,
    transport: elem(info[:address], 3),
    exit: exit,
    without_tls: ProtonStream.Node.start_link(allow_any: true),
    other_ca:
      ProtonStream.Node.start_link(
        allow_any: true,
        tls: Keyword.put(tls, :cacertfile, other_ca),
        start_timeout: 2000
      )
  }

  IO.puts("RESULT:" <> Base.encode64(:erlang.term_to_binary(result)))
  """

  # Writes into the directory argv[0]: ps.pem/ps.key (ps_port's certificate
  # and key), vm.pem/vm.key (the TLS VM's), vm_ca.pem (the CA that signed
  # the VM's certificate) and ps_ca.pem (another CA: the one that signed
  # ps_port's). A P-256 key and SHA-256: Go's crypto/x509 takes neither of
  # pkix_test_data's defaults (a brainpool curve, ECDSA with SHA-1).
  @certs_script ~S"""
  [dir] = System.argv()
  ec = [key: {:namedCurve, :secp256r1}, digest: :sha256]
  chain = %{root: ec, intermediates: [], peer: ec}

  %{server_config: ps, client_config: vm} =
    :public_key.pkix_test_data(%{server_chain: chain, client_chain: chain})

  # cacerts holds both roots: split them by who signed the VM's certificate.
  {[vm_root], [ps_root]} =
    Enum.split_with(ps[:cacerts], &:public_key.pkix_is_issuer(vm[:cert], &1))

  write = fn name, entry -> File.write!(Path.join(dir, name), :public_key.pem_encode([entry])) end
  {ps_type, ps_key} = ps[:key]
  {vm_type, vm_key} = vm[:key]
  write.("ps.pem", {:Certificate, ps[:cert], :not_encrypted})
  write.("ps.key", {ps_type, ps_key, :not_encrypted})
  write.("vm.pem", {:Certificate, vm[:cert], :not_encrypted})
  write.("vm.key", {vm_type, vm_key, :not_encrypted})
  write.("vm_ca.pem", {:Certificate, vm_root, :not_encrypted})
  write.("ps_ca.pem", {:Certificate, ps_root, :not_encrypted})
  """

  setup do
    Process.flag(:trap_exit, true)
    :ok
  end

  test "a VM on TLS distribution runs programs on a ProtonStream.Node started with tls:" do
    dir = Path.join(System.tmp_dir!(), "ps_tls_#{rand_hex()}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    # No openssl: :public_key makes the certificates, in a VM of its own
    # (Mix on Elixir 1.15+ keeps :public_key off this VM's code path).
    {out, status} =
      System.cmd(System.find_executable("elixir"), ["-e", @certs_script, dir],
        stderr_to_stdout: true
      )

    assert status == 0, out

    [ps_cert, ps_key, vm_cert, vm_key, vm_ca, ps_ca] =
      for f <- ~w(ps.pem ps.key vm.pem vm.key vm_ca.pem ps_ca.pem), do: Path.join(dir, f)

    side =
      "[{certfile, #{inspect(vm_cert)}}, {keyfile, #{inspect(vm_key)}}, {verify, verify_none}]"

    optfile = Path.join(dir, "ssl_dist.conf")
    File.write!(optfile, "[{server, #{side}}, {client, #{side}}].\n")
    script = Path.join(dir, "vm.exs")
    File.write!(script, @script)

    ebin = Path.join(:code.lib_dir(:proton_stream), "ebin")

    args = [
      "--erl",
      "-proto_dist inet_tls -ssl_dist_optfile #{optfile}",
      "--name",
      "tls_vm_#{rand_hex()}@127.0.0.1",
      "--cookie",
      "c#{rand_hex(8)}",
      "-pa",
      ebin,
      script,
      ps_cert,
      ps_key,
      vm_ca,
      ps_ca
    ]

    {out, status} = System.cmd(System.find_executable("elixir"), args, stderr_to_stdout: true)
    assert status == 0, out
    assert [_, encoded] = Regex.run(~r/^RESULT:(.*)$/m, out), out
    result = :erlang.binary_to_term(Base.decode64!(encoded))

    assert result.data == "over tls\n"
    assert result.transport == :tls
    assert result.exit == :normal
    assert {:error, {:tls, message}} = result.without_tls
    assert message =~ "this VM runs TLS distribution (-proto_dist inet_tls)"
    assert {:error, {:timeout, message}} = result.other_ca
    assert message =~ "this VM cannot connect to it"
  end

  test ":tls in a VM without TLS distribution is refused, saying what to do" do
    assert {:error, {:tls, message}} =
             ProtonStream.Node.start_link(
               allow_any: true,
               tls: [certfile: "/nonexistent.pem", keyfile: "/nonexistent.key"]
             )

    assert message =~ "this VM does not run TLS distribution"
    assert message =~ "-proto_dist inet_tls"
  end

  test "bad :tls options raise ArgumentError" do
    for tls <- [
          [certfile: "/a.pem"],
          [keyfile: "/a.key"],
          [certfile: "/a.pem", keyfile: "/a.key", verify: true],
          [certfile: ~c"/a.pem", keyfile: "/a.key"],
          "yes"
        ] do
      assert_raise ArgumentError, ~r/invalid ProtonStream.Node option :tls/, fn ->
        ProtonStream.Node.start_link(allow_any: true, tls: tls)
      end
    end
  end
end
