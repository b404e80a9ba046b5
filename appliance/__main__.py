from appliance.cli.root import main

main()
