defmodule VarBridge.ReadmeTest do
  # The README's example, run as the README says (mix run -e) against this
  # module's server, prints what the README says it prints.
  use ExUnit.Case, async: true

  setup_all do
    server = start_supervised!(VarBridge.Test.Server)
    %{url: VarBridge.Test.Server.addrs(server).http}
  end

  test "the README's example runs and prints what it says", %{url: url} do
    readme = File.read!("README.md")
    [_, code] = Regex.run(~r/^```elixir\n(.*?)^```$/ms, readme)
    [_, printed] = Regex.run(~r/^prints\n\n```text\n(.*?)^```$/ms, readme)

    {out, status} =
      System.cmd("mix", ["run", "--no-compile", "--no-deps-check", "-e", code],
        env: [{"VARBRIDGE_URL", url}, {"MIX_ENV", to_string(Mix.env())}],
        stderr_to_stdout: true
      )

    assert status == 0, out
    assert out == printed
  end
end
