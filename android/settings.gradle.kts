pluginManagement {
    repositories {
        google {
            content {
                includeGroupByRegex("com\\.android.*")
                includeGroupByRegex("com\\.google.*")
                includeGroupByRegex("androidx.*")
            }
        }
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "phi-mobile-android"

// :phimobile  the library as an AAR (generated bindings + Kotlin layer + libphi_mobile.so per ABI)
// :chat-logic the sample's chat state machine, plain Kotlin/JVM (tested on the desktop JVM)
// :app        the sample app (Jetpack Compose)
include(":phimobile", ":chat-logic", ":app")
