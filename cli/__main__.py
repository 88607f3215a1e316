from modelstore.cli import main

main()
