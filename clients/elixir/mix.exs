defmodule VarBridge.MixProject do
  use Mix.Project

  # No Hex dependencies: HTTP is OTP's :httpc and JSON is jiffy, the NIF
  # Debian ships as erlang-jiffy (installed into OTP's own lib directory, so
  # it is on the code path already). Elsewhere, point VARBRIDGE_JIFFY_EBIN at
  # a jiffy ebin directory.
  def project do
    jiffy_path()

    [
      app: :varbridge,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      test_coverage: [ignore_modules: [VarBridge.Test.Server, VarBridge.Test.CutProxy]]
    ]
  end

  def application do
    [
      mod: {VarBridge.Application, []},
      extra_applications: [:logger, :inets, :ssl, :jiffy]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  defp jiffy_path do
    if :code.which(:jiffy) == :non_existing do
      dirs =
        [System.get_env("VARBRIDGE_JIFFY_EBIN")] ++
          Path.wildcard(Path.join(:code.lib_dir(), "jiffy-*/ebin")) ++
          Path.wildcard("/usr/lib/erlang/lib/jiffy-*/ebin")

      for dir <- dirs, dir != nil, File.dir?(dir), do: Code.prepend_path(dir)
    end
  end
end
