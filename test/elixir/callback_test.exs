defmodule ProtonStreamTest.CallbackTest do
  # Callback module mode through the VM's shared ps_port (support/callback_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Callback, mode: :shared
end
