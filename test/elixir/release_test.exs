defmodule ProtonStreamTest.ReleaseTest do
  # The suite must run on a shim compiled by the Erlang/OTP it runs on: a
  # .beam from another release can load and still break (OTP 28 moved
  # regular expressions to PCRE2, so a ~r literal compiled on OTP 25 raises
  # ArgumentError in Regex.run/3 on OTP 29). make test-otp compiles the shim
  # inside each release's root, in a build root of its own; this catches a
  # build that leaked in from elsewhere.
  use ExUnit.Case, async: true

  test "every module of :proton_stream was compiled by this runtime's compiler" do
    {:ok, modules} = :application.get_key(:proton_stream, :modules)
    assert modules != []
    _ = Application.load(:compiler)
    compiler = to_string(Application.spec(:compiler, :vsn))
    assert compiler != ""

    for module <- modules do
      compiled_by = to_string(module.module_info(:compile)[:version])

      assert {module, compiled_by} == {module, compiler},
             "#{inspect(module)} was compiled by compiler #{compiled_by}, this runtime's is " <>
               "#{compiler} (OTP #{:erlang.system_info(:otp_release)}): a build from another " <>
               "release leaked in; build in a root of its own (MIX_BUILD_ROOT)"
    end
  end
end
